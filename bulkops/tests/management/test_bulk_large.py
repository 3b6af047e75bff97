"""``bulk ACTION --filter … --wait`` past the per-operation cap (PostgreSQL): a user with
``bulkops.run_large_operation`` starts one large operation that the workers run slice by
slice, ``--created-before`` / ``--created-after`` bound the filter, and ``--wait``
shows the rate and ETA — redrawn on a terminal, a line every few seconds otherwise —
and exits with the status that says how it ended. Everyone else keeps the cap."""

from __future__ import annotations

import io
import itertools

import pytest
from django.core.management.base import OutputWrapper

from bulkops.itemsummary import outcome_counts
from bulkops.management.progress import ProgressDisplay, clock_text, progress_line
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.cli import run_bulk, worker_while_waiting
from bulkops.tests.support.large import LARGE_PERMS, seed_sessions
from bulkops.tests.support.processes import using_postgres

SIZE = 3000
CAP = 100


@pytest.fixture
def seeded(owner, settings):
    """3,000 sessions of ``owner`` (70 % active), the first 1,000 created in 2024."""
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = CAP
    settings.BULKOPS_CHUNK_SECONDS = 0
    settings.BULKOPS_CHUNK_SIZE = 250
    seed_sessions(owner, SIZE)
    Session.objects.filter(pk__lt="large-0001000").update(created_at="2024-06-01T00:00:00Z")


@pytest.mark.postgres
@pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL")
@pytest.mark.django_db
class TestPastTheCap:
    def test_a_permitted_user_closes_every_match_and_waits_to_completed(
        self, seeded, make_user, capsys
    ):
        make_user("ops", staff=True, perms=LARGE_PERMS)
        line = "bulk close --user ops --filter status=active --created-before 2025-01-01 --wait"
        with worker_while_waiting():
            result = run_bulk(line, capsys)
        op = BulkOperation.objects.get()
        assert result.code == 0, result.err
        assert op.is_large and outcome_counts(op) == {"succeeded": 700} and op.succeeded == 700
        assert op.items.count() == op.failed == 0  # compact: no item row per succeeded session
        assert op.selection["filter"] == {"status": "active", "created_before": "2025-01-01"}
        old = Session.objects.filter(created_at__year=2024)
        assert old.filter(status="closed").count() == 900  # 700 closed now, 200 before
        assert Session.objects.filter(created_at__year__gt=2024, status="active").count() == 1400
        assert "sessions/s" in result.out and "ETA" in result.out
        assert "completed: 700 succeeded, 0 skipped, 0 failed" in result.out

    def test_created_after_alone_is_a_filter(self, seeded, make_user, capsys):
        make_user("ops", staff=True, perms=LARGE_PERMS)
        result = run_bulk("bulk close --user ops --created-after 2025-01-01", capsys)
        op = BulkOperation.objects.get()
        assert result.code == 0, result.err
        assert (
            op.is_large
            and op.total == 2000
            and op.selection["filter"] == {"created_after": "2025-01-01"}
        )

    def test_a_processing_share_ends_partial_with_exit_4(self, seeded, make_user, capsys):
        make_user("ops", staff=True, perms=LARGE_PERMS)
        with worker_while_waiting():
            result = run_bulk("bulk archive --user ops --created-before 2025-01-01 --wait", capsys)
        op = BulkOperation.objects.get()
        assert (result.code, op.status) == (4, "partial")
        assert (op.succeeded, op.failed) == (900, 100)  # processing sessions fail

    def test_without_the_permission_the_cap_stays_and_nothing_is_created(
        self, seeded, owner, capsys
    ):
        result = run_bulk("bulk close --user owner --created-before 2025-01-01", capsys)
        assert result.code == 1
        assert str(CAP) in result.err
        assert not BulkOperation.objects.exists()


@pytest.mark.django_db
def test_date_bounds_with_ids_are_a_usage_error(owner, capsys):
    result = run_bulk("bulk close --user owner --ids a1 --created-before 2025-01-01", capsys)
    assert result.code == 2
    assert "--created-before: not allowed with argument --ids" in result.err
    assert not BulkOperation.objects.exists()


@pytest.mark.django_db
def test_a_bad_date_is_a_usage_error_naming_the_option(owner, capsys):
    result = run_bulk("bulk close --user owner --created-before 2025-13-45", capsys)
    assert result.code == 2
    assert "--created-before" in result.err and "ISO 8601" in result.err


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def operation(**counts) -> BulkOperation:
    base = {"total": 1_000_000, "processed": 0, "status": "running"}
    return BulkOperation(action="close", **{**base, **counts})


def test_the_line_has_the_rate_and_eta(monkeypatch):
    monkeypatch.setattr("bulkops.management.progress.rate_per_second", lambda op: 25_000.0)
    monkeypatch.setattr("bulkops.management.progress.eta_seconds", lambda op: 3723.4)
    line = progress_line(operation(processed=250_000, succeeded=250_000))
    assert "25.0% 250,000/1,000,000" in line
    assert "25,000 sessions/s" in line and "ETA 1:02:03" in line
    assert clock_text(None) == "?" and clock_text(65) == "1:05"


def test_on_a_terminal_one_bar_is_redrawn_in_place():
    out = TTY()
    display = ProgressDisplay(OutputWrapper(out))
    for processed in (0, 10, 20):
        display.show(operation(processed=processed))
    display.show(operation(processed=30, status="completed"), last=True)
    text = out.getvalue()
    assert text.count("\r") == 4 and text.count("\n") == 1 and text.endswith("\n")


def test_without_a_terminal_a_line_every_few_seconds():
    out = io.StringIO()
    ticks = itertools.count(step=1.0)  # one poll a second
    display = ProgressDisplay(OutputWrapper(out), clock=lambda: next(ticks), every=5.0)
    for processed in range(12):
        display.show(operation(processed=processed))
    display.show(operation(processed=12, status="completed"), last=True)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 4  # at 0 s, 5 s, 10 s, and the last
    assert lines[-1].rstrip().endswith("completed")
