"""A large operation end to end at 100,000 sessions (PostgreSQL; engine.large): the POST
writes the operation and one slice, never an item; the worker walks the filter by
primary key and acts on every matching session exactly once — also across a worker
that stops mid-run, a pause and a resume — and a cancel leaves the rest untouched;
the items, the report, retry and undo work as for a small operation."""

from __future__ import annotations

import csv
import io

import pytest
from django_tasks_db.models import DBTaskResult

from bulkops.engine import (
    Selection,
    operation_cancel,
    operation_create,
    operation_execute,
    operation_pause,
    operation_resume,
    operation_retry,
    operation_undo,
)
from bulkops.models import BulkOperation, BulkOperationItem, Session
from bulkops.representations import operation_representation
from bulkops.tests.support.api import token_client
from bulkops.tests.support.helpers import run_worker
from bulkops.tests.support.large import (
    LARGE_PERMS,
    assert_each_session_once,
    outcome_rows,
    seed_sessions,
    seeded_counts,
)
from bulkops.tests.support.processes import using_postgres

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL"),
    pytest.mark.django_db,
]

SIZE = 100_000
COUNTS = seeded_counts(SIZE)


@pytest.fixture(autouse=True)
def full_chunks(settings):
    """Every chunk takes BULKOPS_CHUNK_SIZE (5,000) sessions: 20 chunks per run."""
    settings.BULKOPS_CHUNK_SECONDS = 0
    settings.BULKOPS_CHUNK_SIZE = 5000


@pytest.fixture
def staff(make_user):
    return make_user(staff=True, perms=LARGE_PERMS)


@pytest.fixture
def seeded(owner):
    seed_sessions(owner, SIZE)


def close_all(user) -> BulkOperation:
    return operation_create(user=user, action="close", selection=Selection(filter={})).operation


def statuses() -> dict[str, int]:
    rows = Session.objects.values_list("status").order_by()
    return {status: rows.filter(status=status).count() for status in COUNTS}


def run_with(op: BulkOperation, hook) -> BulkOperation:
    """Run ``op`` in this thread; ``hook(fresh)`` is asked between chunks with the
    operation as committed so far (True: the worker stops there, as at a shutdown)."""
    answer = operation_execute(
        operation_id=op.pk, should_stop=lambda: hook(BulkOperation.objects.get(pk=op.pk))
    )
    answer.refresh_from_db()
    return answer


def assert_nothing_past_the_cursors(op: BulkOperation) -> None:
    """No unfinished slice has an item or a chunk past its cursor: the next chunk
    starts there."""
    for piece in op.slices.filter(done=False):
        past = op.items.filter(session_id__gt=piece.cursor or piece.after)
        chunks = op.chunks.filter(last_id__gt=piece.cursor or piece.after)
        if piece.through:
            past = past.filter(session_id__lte=piece.through)
            chunks = chunks.filter(first_id__lte=piece.through)
        assert not past.exists(), piece
        assert not chunks.exists(), piece


def test_create_writes_the_operation_and_its_slices_never_an_item(staff, seeded):
    op = close_all(staff)
    assert op.is_large and op.total == SIZE
    assert op.selection["filter"] == {}
    assert op.selection["created_until"] == op.created_at.isoformat()
    assert BulkOperationItem.objects.count() == 0
    slices = list(op.slices.order_by("number").values_list("after", "through", "cursor", "done"))
    assert len(slices) == 4  # BULKOPS_LARGE_SLICES, cut at the statistics' bounds
    edges = [after for after, *_ in slices] + [slices[-1][1]]
    assert edges[0] == edges[-1] == "" and edges[1:-1] == sorted(edges[1:-1])
    assert all(through == nxt for (_, through, *_), nxt in zip(slices, edges[1:], strict=True))
    assert {(cursor, done) for *_, cursor, done in slices} == {("", False)}
    assert DBTaskResult.objects.count() == 4  # one task per slice
    assert statuses() == COUNTS  # nothing acted on yet


def test_the_run_acts_on_every_matching_session_exactly_once(staff, seeded):
    op = close_all(staff)
    run_worker()
    op.refresh_from_db()
    assert op.status == "partial"
    assert (op.total, op.processed) == (SIZE, SIZE)
    assert (op.succeeded, op.skipped, op.failed) == (
        COUNTS["active"],
        COUNTS["closed"],
        COUNTS["processing"],
    )
    assert_each_session_once(op)
    assert [sid for sid, *_ in outcome_rows(op)] == sorted(
        Session.objects.values_list("pk", flat=True)
    )
    processing = COUNTS["processing"]
    assert statuses() == {"active": 0, "closed": SIZE - processing, "processing": processing}
    assert set(op.items.filter(outcome="failed").values_list("reason", flat=True)) == {"processing"}
    assert not op.slices.filter(done=False).exists()


def test_a_worker_that_stops_mid_run_is_resumed_from_its_cursor_without_repeats(staff, seeded):
    op = close_all(staff)
    stopped = run_with(op, lambda fresh: fresh.processed >= 30_000)
    assert stopped.status == "running"  # left for the next worker, as after SIGTERM
    assert 30_000 <= stopped.processed < SIZE
    assert_nothing_past_the_cursors(op)
    assert len(outcome_rows(op)) == stopped.processed
    assert not op.slices.exclude(claimed_by="").exists()  # its claim was released
    finished = run_with(op, lambda fresh: False)
    assert finished.status == "partial" and finished.processed == SIZE
    assert finished.attempts == 1  # a worker that shut down lost no attempt
    assert_each_session_once(finished)
    assert statuses()["active"] == 0


def test_pause_mid_run_stops_at_a_chunk_boundary_and_resume_finishes_the_rest(staff, seeded):
    op = close_all(staff)

    def pause_once(fresh):
        if fresh.processed >= 20_000 and not fresh.pause_requested and fresh.status == "running":
            operation_pause(operation=fresh)
        return False

    paused = run_with(op, pause_once)
    assert paused.status == "paused"
    assert 20_000 <= paused.processed < SIZE
    shown = operation_representation(paused)
    assert 20 <= shown["progress"] < 100
    assert shown["eta_seconds"] is None  # paused: it waits for a resume, not a worker
    assert len(outcome_rows(op)) == paused.processed
    assert Session.objects.filter(status="active").count() == COUNTS["active"] - paused.succeeded

    operation_resume(operation=paused)
    run_worker()
    op.refresh_from_db()
    assert op.status == "partial" and op.processed == SIZE
    assert_each_session_once(op)
    assert statuses()["active"] == 0


def test_cancel_mid_run_leaves_the_rest_untouched_and_counts_it_cancelled(staff, seeded):
    op = close_all(staff)

    def cancel_once(fresh):
        if fresh.processed >= 20_000 and not fresh.cancel_requested:
            operation_cancel(operation=fresh)
        return False

    cancelled = run_with(op, cancel_once)
    assert cancelled.status == "cancelled"
    acted = len(outcome_rows(op))
    assert 20_000 <= acted < SIZE
    # The sessions the run never reached have no item: they are counted.
    assert cancelled.cancelled == SIZE - acted
    assert cancelled.processed == cancelled.total == SIZE
    closed_by_it = sum(1 for _, outcome, _ in outcome_rows(op) if outcome == "succeeded")
    assert Session.objects.filter(status="active").count() == COUNTS["active"] - closed_by_it
    assert_nothing_past_the_cursors(op)


def test_items_report_undo_and_retry_of_a_large_close(staff, seeded):
    op = close_all(staff)
    run_worker()
    client = token_client(staff)

    page = client.get(f"/api/bulk/operations/{op.pk}/items?outcome=failed&page_size=100").json()
    assert page["count"] == COUNTS["processing"]
    assert {item["reason"] for item in page["results"]} == {"processing"}

    report = client.get(f"/api/bulk/operations/{op.pk}/report?format=csv")
    rows = list(csv.reader(io.StringIO(b"".join(report.streaming_content).decode())))
    assert len(rows) == SIZE + 1 and rows[0] == ["session_id", "outcome", "reason", "message"]

    undo = operation_undo(operation=op, user=staff).operation
    assert undo.is_large and undo.total == COUNTS["active"]
    assert BulkOperationItem.objects.filter(operation=undo).count() == 0
    run_worker()
    undo.refresh_from_db()
    assert undo.status == "completed" and undo.succeeded == COUNTS["active"]
    assert_each_session_once(undo)
    assert statuses() == COUNTS  # every session as it was

    Session.objects.filter(status="processing").update(status="active")
    op.refresh_from_db()
    retry = operation_retry(operation=op, user=staff).operation
    assert retry.is_large and retry.total == COUNTS["processing"]
    run_worker()
    retry.refresh_from_db()
    assert (retry.status, retry.succeeded) == ("completed", COUNTS["processing"])
    assert_each_session_once(retry)
