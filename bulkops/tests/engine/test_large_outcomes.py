"""What a large operation keeps of what it did, at 100,000 sessions (PostgreSQL): one
chunk row per committed chunk — the sessions it acted on and their previous statuses,
the ones it skipped and why, as arrays — and an item only per failed session; read back, they are the items
every interface shows: the items API pages and filters them, the report streams every
one, undo restores each session's previous status, retry takes exactly the failed."""

from __future__ import annotations

import csv
import io
import itertools
import json
import time

import pytest
from django.db import connection

from bulkops.actions import reasons
from bulkops.engine import Selection, operation_create, operation_retry, operation_undo
from bulkops.models import BulkOperation, BulkOperationItem, OperationChunk, Session
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
#: The bound on what a large operation keeps per million sessions it acted on.
BYTES_PER_MILLION = 25_000_000
TABLES = (OperationChunk._meta.db_table, BulkOperationItem._meta.db_table)


@pytest.fixture(autouse=True)
def full_chunks(settings):
    settings.BULKOPS_CHUNK_SECONDS = 0
    settings.BULKOPS_CHUNK_SIZE = 5000


@pytest.fixture
def staff(make_user):
    return make_user(staff=True, perms=LARGE_PERMS)


def run(user, action: str, filters: dict | None = None, **params) -> BulkOperation:
    selection = Selection(filter=filters or {})
    op = operation_create(user=user, action=action, selection=selection, params=params).operation
    assert op.is_large
    run_worker()
    op.refresh_from_db()
    return op


def stored_bytes() -> int:
    """``pg_total_relation_size`` of the tables that hold outcomes (heap, TOAST, indexes)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(%s::text[]) AS t",
            [list(TABLES)],
        )
        return int(cursor.fetchone()[0])


def statuses() -> dict[str, int]:
    rows = Session.objects.values_list("status").order_by()
    return {status: rows.filter(status=status).count() for status in COUNTS}


def test_a_large_close_keeps_a_row_per_chunk_and_items_only_for_the_failed(staff, owner):
    seed_sessions(owner, SIZE)
    op = run(staff, "close")
    assert (op.succeeded, op.skipped, op.failed) == (
        COUNTS["active"],
        COUNTS["closed"],
        COUNTS["processing"],
    )
    assert_each_session_once(op)
    chunks = list(op.chunks.order_by("first_id"))
    # One row per committed chunk: 5,000 sessions each, bar each slice's last.
    assert SIZE // 5000 <= len(chunks) <= SIZE // 5000 + op.slices.count()
    assert sum(c.succeeded for c in chunks) == op.succeeded
    assert sum(c.skipped for c in chunks) == op.skipped
    assert sum(c.failed for c in chunks) == op.failed
    # A slice's last chunk can be a handful of sessions (none of them closed, say), so
    # each chunk holds a subset of the outcomes and the chunks together hold them all.
    for chunk in chunks:
        assert len(chunk.session_ids) == len(chunk.previous_statuses) == chunk.succeeded
        assert chunk.session_ids == sorted(chunk.session_ids)
        assert set(chunk.previous_statuses) <= {"active"}
        assert len(chunk.skipped_ids) == len(chunk.skipped_reasons) == chunk.skipped
        assert chunk.skipped_ids == sorted(chunk.skipped_ids)
        assert set(chunk.skipped_reasons) <= {"already_closed"}
        acted_on = chunk.session_ids + chunk.skipped_ids
        assert all(chunk.first_id <= sid <= chunk.last_id for sid in acted_on)
    assert set().union(*(c.previous_statuses for c in chunks)) == {"active"}
    assert set().union(*(c.skipped_reasons for c in chunks)) == {"already_closed"}
    assert all(a.last_id < b.first_id for a, b in itertools.pairwise(chunks))
    # Only the failed sessions keep an item (what a retry takes).
    assert set(op.items.values_list("outcome", "reason").distinct()) == {("failed", "processing")}


def test_storage_per_million_sessions_acted_on_stays_under_25_mb(staff, owner):
    seed_sessions(owner, SIZE)
    before = stored_bytes()
    op = run(staff, "close", {"status": "active"})
    assert op.succeeded == COUNTS["active"] and op.items.count() == 0
    grown = stored_bytes() - before
    per_million = grown * 1_000_000 // op.succeeded
    print(
        f"\n[large outcomes] {grown} bytes for {op.succeeded} sessions: {per_million} per million"
    )
    assert per_million <= BYTES_PER_MILLION


def test_the_items_api_pages_and_filters_compact_outcomes_as_item_rows(staff, owner):
    seed_sessions(owner, SIZE)
    op = run(staff, "close")
    expected = outcome_rows(op)
    client = token_client(staff)
    url = f"/api/bulk/operations/{op.pk}/items"

    def page(number: int, size: int, outcome: str | None = None) -> dict:
        query = f"?page={number}&page_size={size}" + (f"&outcome={outcome}" if outcome else "")
        answer = client.get(url + query)
        assert answer.status_code == 200, answer.content
        return answer.json()

    def rows(body: dict) -> list[tuple[str, str, str]]:
        assert all(set(r) == {"session_id", "outcome", "reason", "message"} for r in body)
        return [(r["session_id"], r["outcome"], r["reason"]) for r in body]

    first = page(1, 1000)
    assert first["count"] == SIZE and first["previous"] is None and first["next"]
    assert rows(first["results"]) == expected[:1000]
    middle = page(37, 1000)  # straddles chunks, skipped and failed items in between
    assert rows(middle["results"]) == expected[36_000:37_000]
    assert rows(page(100, 1000)["results"]) == expected[99_000:]
    assert client.get(url + "?page=101&page_size=1000").status_code == 404

    for outcome, count in (
        ("succeeded", COUNTS["active"]),
        ("skipped", COUNTS["closed"]),
        ("failed", COUNTS["processing"]),
    ):
        wanted = [row for row in expected if row[1] == outcome]
        assert len(wanted) == count
        body = page(7, 999, outcome)
        assert body["count"] == count
        assert rows(body["results"]) == wanted[6 * 999 : 7 * 999]
    assert page(1, 50, "cancelled")["count"] == 0
    # A skipped session's message is its reason's, as on an item.
    for outcome, reason in (("skipped", "already_closed"), ("failed", "processing")):
        shown = {(r["reason"], r["message"]) for r in page(3, 100, outcome)["results"]}
        assert shown == {(reason, reasons.message_for(reason))}

    detail = client.get(f"/api/bulk/operations/{op.pk}/?outcome=failed&page_size=5").json()
    assert detail["items"]["count"] == COUNTS["processing"]
    assert {r["reason"] for r in detail["items"]["results"]} == {"processing"}


def test_the_report_streams_every_session_with_its_outcome(staff, owner):
    seed_sessions(owner, SIZE)
    op = run(staff, "close")
    client = token_client(staff)
    started = time.perf_counter()
    answer = client.get(f"/api/bulk/operations/{op.pk}/report?format=csv")
    body = b"".join(answer.streaming_content)
    seconds = time.perf_counter() - started
    lines = list(csv.reader(io.StringIO(body.decode())))
    assert lines[0] == ["session_id", "outcome", "reason", "message"]
    assert [tuple(line[:3]) for line in lines[1:]] == outcome_rows(op)
    print(
        f"\n[large outcomes] report: {SIZE} rows, {len(body)} bytes, {SIZE / seconds:,.0f} rows/s"
    )

    failed = client.get(f"/api/bulk/operations/{op.pk}/report?format=json&outcome=failed")
    items = json.loads(b"".join(failed.streaming_content))["items"]
    assert len(items) == COUNTS["processing"] and {i["reason"] for i in items} == {"processing"}


@pytest.mark.timeout(900)  # archive and its undo check and apply in Python: ~2x a close
def test_undo_restores_each_sessions_previous_status_from_the_chunks(staff, owner):
    seed_sessions(owner, SIZE)
    op = run(staff, "archive")  # active and closed sessions: two previous statuses
    assert op.succeeded == COUNTS["active"] + COUNTS["closed"]
    assert {s for c in op.chunks.all() for s in c.previous_statuses} == {"active", "closed"}
    assert statuses() == {"active": 0, "closed": 0, "processing": COUNTS["processing"]}

    undo = operation_undo(operation=op, user=staff).operation
    assert undo.is_large and undo.total == op.succeeded
    run_worker()
    undo.refresh_from_db()
    assert (undo.status, undo.succeeded) == ("completed", op.succeeded)
    assert_each_session_once(undo)
    assert statuses() == COUNTS  # every session back in the status it had


def test_retry_takes_exactly_the_failed_sessions(staff, owner):
    seed_sessions(owner, SIZE)
    op = run(staff, "close")
    failed = [sid for sid, outcome, _ in outcome_rows(op) if outcome == "failed"]
    Session.objects.filter(status="processing").update(status="active")
    retry = operation_retry(operation=op, user=staff).operation
    assert retry.is_large and retry.total == len(failed) == COUNTS["processing"]
    run_worker()
    retry.refresh_from_db()
    assert (retry.status, retry.succeeded) == ("completed", len(failed))
    assert [sid for sid, *_ in outcome_rows(retry)] == failed
