"""The service markers' rule (a pytest plugin, loaded by ``bulkops/tests/conftest.py``).

A test that needs a service says so with a marker — ``postgres``, ``redis`` or
``browser`` — and never with a ``skipif`` of its own. Which services a pass has is read
from its environment, once:

- ``postgres``: the pass whose ``DATABASE_URL`` is a PostgreSQL URL;
- ``redis``: the pass whose ``REDIS_URL`` is set;
- ``browser``: every pass (a missing Chromium is a skip, or a failure in CI).

A test marked for a service its pass does not have is skipped at collection, with a
reason naming the pass it runs in, and the terminal summary counts those skips: that is
the SQLite pass's legitimate, reported share. A test whose every marked service the pass
has must run: when ``CI`` is set, its skip — from a ``skipif``, a fixture or the body —
is reported as a failure, so a PostgreSQL pass that cannot reach PostgreSQL fails
instead of going green with its PostgreSQL tests skipped.

Prerequisites no marker names (server binaries, a tmpfs) use ``helpers.require``, which
fails in CI by the same rule (``in_ci``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping

import pytest

SERVICES = ("postgres", "redis", "browser")
#: Where a test marked for a service runs, for the skip reason and the summary.
RUNS_IN = {
    "postgres": "the PostgreSQL pass (DATABASE_URL=postgres://…)",
    "redis": "a pass with Redis (REDIS_URL set)",
    "browser": "every pass",
}
_MISSING = pytest.StashKey[tuple[str, ...]]()
_SKIPPED_FOR = pytest.StashKey[Counter]()


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """True when ``CI`` is set to anything but empty, ``0`` or ``false``."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false")


def pass_services(environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """The services this pass has, by the rule in the module docstring."""
    have = {"browser"}
    if environ.get("DATABASE_URL", "").startswith("postgres"):
        have.add("postgres")
    if environ.get("REDIS_URL"):
        have.add("redis")
    return frozenset(have)


def marked_services(item: pytest.Item) -> tuple[str, ...]:
    return tuple(s for s in SERVICES if item.get_closest_marker(s) is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SKIPPED_FOR] = Counter()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with the reason, each test marked for a service this pass does not have."""
    have = pass_services()
    for item in items:
        missing = tuple(s for s in marked_services(item) if s not in have)
        item.stash[_MISSING] = missing
        if missing:
            where = "; ".join(f"{s} runs in {RUNS_IN[s]}" for s in missing)
            item.add_marker(pytest.mark.skip(reason=f"not this pass's service: {where}"))
            config.stash[_SKIPPED_FOR].update(missing)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI, a skip of a test whose marked services this pass has is a failure."""
    report = yield
    services = marked_services(item)
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and services
        and not item.stash.get(_MISSING, ())
        and in_ci()
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} is marked {', '.join(services)}, which this pass has "
            f"(DATABASE_URL/REDIS_URL), and CI is set: it must run, but it skipped "
            f"({report.when}): {reason}"
        )
    return report


def pytest_report_header(config: pytest.Config) -> str:
    have = ", ".join(sorted(pass_services()))
    rule = "a skip of a test marked for them fails the run" if in_ci() else "skips allowed"
    return f"services of this pass: {have} (CI: {rule})"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    skipped = config.stash.get(_SKIPPED_FOR, Counter())
    if skipped:
        counts = ", ".join(f"{n} {s} ({RUNS_IN[s]})" for s, n in sorted(skipped.items()))
        terminalreporter.write_line(f"not this pass's services, skipped: {counts}")
