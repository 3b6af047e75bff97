"""Helpers of the large-operation tests: many sessions in one statement, a user who may
run large operations, and the invariants a large run must keep."""

from __future__ import annotations

from collections import Counter

from django.db import connection

from bulkops.itemstore import item_rows
from bulkops.models import BulkOperation, Session

LARGE_PERMS = (
    "bulkops.run_large_operation",
    "bulkops.change_session",
    "bulkops.delete_session",
    "bulkops.view_session",
)
#: The statuses ``seed_sessions`` gives, by ``g % 10``: 7 active, 2 closed, 1 processing.
SEED_STATUS_SQL = (
    "CASE WHEN g %% 10 < 7 THEN 'active' WHEN g %% 10 < 9 THEN 'closed' ELSE 'processing' END"
)


def seed_sessions(owner, count: int, *, prefix: str = "large") -> None:
    """``count`` sessions ``<prefix>-000000…`` of ``owner`` in one ``INSERT … SELECT``
    (PostgreSQL): 70 % active, 20 % closed, 10 % processing, created a day ago."""
    table = connection.ops.quote_name(Session._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (id, owner_id, title, status, content, metadata, "
            "created_at, updated_at) SELECT %s || '-' || lpad(g::text, 7, '0'), %s, "
            f"'Session ' || g, {SEED_STATUS_SQL}, '', '{{}}', now() - interval '1 day', "
            "now() - interval '1 day' FROM generate_series(0, %s - 1) AS g",
            [prefix, owner.pk, count],
        )
        cursor.execute(f"ANALYZE {table}")


def seeded_counts(count: int) -> dict[str, int]:
    """How many sessions of each status ``seed_sessions(…, count)`` made."""
    active = sum(1 for g in range(count) if g % 10 < 7)
    processing = sum(1 for g in range(count) if g % 10 == 9)
    return {"active": active, "closed": count - active - processing, "processing": processing}


def outcome_rows(op: BulkOperation) -> list[tuple[str, str, str]]:
    """Every ``(session_id, outcome, reason)`` the operation recorded, in id order,
    however it keeps them (items, or chunks and items)."""
    fields = ("session_id", "outcome", "reason")
    return list(item_rows(operation=op, outcome=None, fields=fields, batch=5000))


def assert_each_session_once(op: BulkOperation) -> None:
    """Every processed session has exactly one outcome, the outcomes come in id order,
    the counters add up — and a large operation keeps an item only per failed session."""
    op.refresh_from_db()
    rows = outcome_rows(op)
    ids = [sid for sid, *_ in rows]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)  # the test database sorts bytewise
    assert op.succeeded + op.skipped + op.failed + op.cancelled == op.processed <= op.total
    by_outcome = Counter(outcome for _, outcome, _ in rows)
    assert by_outcome["succeeded"] == op.succeeded
    assert by_outcome["skipped"] == op.skipped
    assert by_outcome["failed"] == op.failed
    if op.is_large:
        assert not op.items.filter(outcome="succeeded").exists()
        assert op.items.count() == op.failed  # skipped sessions are kept in the chunks
