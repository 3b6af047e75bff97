"""What CI enforces about the suite itself: a test marked for a service its pass has
must run (``support/services.py``), and a pass that ran no test fails (``.ci/run``).

Each case runs a real pytest (or ``.ci/run``) in a subprocess over a tiny test file, with
the environment of the pass it imitates, and reads its exit status and report.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INI = """[pytest]
markers =
    postgres: -
    redis: -
    browser: -
"""
POSTGRES = {"DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere"}
REDIS = {"REDIS_URL": "redis://127.0.0.1:1/0"}
CI = {"CI": "true"}
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
#: The tiny runs need no installed plugin (pytest-django least of all): they start faster.
BARE = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

SKIPS_IN_BODY = """
import pytest

@pytest.mark.{marker}
def test_needs_it():
    pytest.skip("the service is not reachable")
"""
SKIPS_BY_SKIPIF = """
import pytest

@pytest.mark.{marker}
@pytest.mark.skipif(True, reason="the service is not reachable")
def test_needs_it():
    pass
"""
SKIPS_IN_FIXTURE = """
import pytest

@pytest.fixture
def service():
    pytest.skip("the service is not reachable")

@pytest.mark.{marker}
def test_needs_it(service):
    pass
"""


def pytest_run(tmp_path: Path, source: str, env: dict[str, str]) -> tuple[int, str]:
    """Run pytest with the services plugin over ``source`` in an environment holding only
    ``env`` of the pass variables; return (exit status, output)."""
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_tiny.py").write_text(source)
    scrubbed = ("CI", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PYTEST_ADDOPTS")
    base = {k: v for k, v in os.environ.items() if k not in scrubbed}
    done = subprocess.run(
        [*PYTEST, "-p", "bulkops.tests.support.services", "-rA", "test_tiny.py"],
        cwd=tmp_path,
        env={**base, **BARE, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def summary(out: str) -> str:
    """pytest's closing line, e.g. ``1 passed, 2 skipped in 0.05s``."""
    return re.findall(r"^=+ (.+ in [0-9.]+s.*) =+$", out, re.M)[-1]


# --- the service markers ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source", [SKIPS_IN_BODY, SKIPS_BY_SKIPIF, SKIPS_IN_FIXTURE], ids=["body", "skipif", "fixture"]
)
def test_postgres_pass_in_ci_fails_when_a_postgres_test_skips(tmp_path, source):
    status, out = pytest_run(tmp_path, source.format(marker="postgres"), POSTGRES | CI)

    assert status == 1, out
    assert "is marked postgres, which this pass has" in out, out
    assert "the service is not reachable" in out, out
    assert " skipped" not in summary(out), out


def test_postgres_pass_outside_ci_lets_a_postgres_test_skip(tmp_path):
    status, out = pytest_run(tmp_path, SKIPS_IN_BODY.format(marker="postgres"), POSTGRES)

    assert status == 0, out
    assert "1 skipped" in summary(out), out


def test_sqlite_pass_skips_postgres_tests_unrun_and_reports_them(tmp_path):
    source = """
import pytest

@pytest.mark.postgres
def test_needs_postgres():
    raise AssertionError("ran in the SQLite pass")

@pytest.mark.postgres
@pytest.mark.redis
def test_needs_both():
    raise AssertionError("ran in the SQLite pass")

def test_needs_nothing():
    pass
"""
    status, out = pytest_run(tmp_path, source, CI)

    assert status == 0, out
    assert "ran in the SQLite pass" not in out, out
    assert "1 passed, 2 skipped" in summary(out), out
    assert "not this pass's service: postgres runs in the PostgreSQL pass" in out, out
    assert "not this pass's services, skipped: 2 postgres" in out, out
    assert "1 redis" in out, out


def test_a_test_needing_a_service_the_pass_lacks_is_skipped_though_it_has_another(tmp_path):
    source = """
import pytest

@pytest.mark.postgres
@pytest.mark.redis
def test_needs_both():
    raise AssertionError("ran without Redis")
"""
    status, out = pytest_run(tmp_path, source, POSTGRES | CI)

    assert status == 0, out
    assert "1 skipped" in summary(out), out
    assert "not this pass's service: redis runs in a pass with Redis" in out, out


def test_redis_test_must_run_where_redis_url_is_set_and_skips_elsewhere(tmp_path):
    source = SKIPS_IN_BODY.format(marker="redis")
    with_redis, out_with = pytest_run(tmp_path, source, REDIS | CI)
    without, out_without = pytest_run(tmp_path, source, CI)

    assert with_redis == 1, out_with
    assert "is marked redis, which this pass has" in out_with, out_with
    assert without == 0, out_without
    assert "not this pass's services, skipped: 1 redis" in out_without, out_without


def test_browser_test_must_run_in_every_ci_pass(tmp_path):
    source = SKIPS_IN_BODY.format(marker="browser")
    on_sqlite, out_sqlite = pytest_run(tmp_path, source, CI)
    on_postgres, out_postgres = pytest_run(tmp_path, source, POSTGRES | REDIS | CI)

    assert on_sqlite == 1, out_sqlite
    assert on_postgres == 1, out_postgres
    assert "is marked browser, which this pass has" in out_sqlite, out_sqlite


def test_marked_tests_that_run_pass_and_an_expected_failure_stays_one(tmp_path):
    source = """
import pytest

@pytest.mark.postgres
def test_runs():
    pass

@pytest.mark.postgres
@pytest.mark.xfail(reason="known", strict=True)
def test_known_failure():
    raise AssertionError("known")
"""
    status, out = pytest_run(tmp_path, source, POSTGRES | CI)

    assert status == 0, out
    assert "1 passed, 1 xfailed" in summary(out), out


# --- .ci/run ------------------------------------------------------------------------------------
def ci_run(tmp_path: Path, tests: dict[str, str]) -> tuple[int, str]:
    """Run a copy of ``.ci/run`` whose README's test line runs pytest over ``tests``
    ({file name: source}); the service commands it may call (pg_isready, redis-cli,
    apt-get) are stubs that succeed, so only its handling of the passes is exercised."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    (repo / "tests").mkdir()
    for name, source in tests.items():
        (repo / "tests" / name).write_text(source)
    line = " ".join([*PYTEST, "-q", "tests"])
    (repo / "README.md").write_text(f"# x\n\n```\ntrue\n{line}\n```\n")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for command in ("pg_isready", "redis-cli", "apt-get", "pg_ctlcluster", "redis-server"):
        (stubs / command).write_text("#!/bin/sh\nexit 0\n")
        (stubs / command).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "CI")}
    done = subprocess.run(
        ["bash", str(repo / ".ci" / "run")],
        env={**env, **BARE, "PATH": f"{stubs}:{env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def test_ci_run_fails_a_pass_in_which_no_test_ran(tmp_path):
    status, out = ci_run(tmp_path, {"helpers.py": "VALUE = 1\n"})

    assert status != 0, out
    assert "CI: Run 1 of 2: PostgreSQL + Redis ran no test (pytest exit 5)" in out, out
    assert "Run 2 of 2" not in out, out


def test_ci_run_runs_both_passes_each_with_its_environment(tmp_path):
    probe = """
import os

def test_pass_environment():
    seen = [os.environ.get(name, "-") for name in ("CI", "DATABASE_URL", "REDIS_URL")]
    with open("passes.txt", "a") as passes:
        passes.write(" ".join(seen) + "\\n")
"""
    status, out = ci_run(tmp_path, {"test_probe.py": probe})

    assert status == 0, out
    assert out.count("1 passed") == 2, out
    assert (tmp_path / "repo" / "passes.txt").read_text().splitlines() == [
        "true postgres://postgres@127.0.0.1:5432/test redis://127.0.0.1:6379/0",
        "true - -",
    ]


def test_ci_run_fails_with_the_status_of_a_failing_pass(tmp_path):
    status, out = ci_run(tmp_path, {"test_fails.py": "def test_fails():\n    assert False\n"})

    assert status == 1, out
    assert "CI: Run 1 of 2: PostgreSQL + Redis failed (exit 1)" in out, out
