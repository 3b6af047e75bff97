"""Helpers of the large-operation tests: many sessions in one statement, a user who may
run large operations, and the invariants a large run must keep."""

from __future__ import annotations

from django.db import connection

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


def assert_each_session_once(op: BulkOperation) -> None:
    """Every processed session has exactly one item, and the counters add up."""
    op.refresh_from_db()
    items = op.items
    assert items.count() == items.values("session_id").distinct().count()
    assert op.succeeded + op.skipped + op.failed + op.cancelled == op.processed <= op.total
    assert items.filter(outcome="succeeded").count() == op.succeeded
    assert items.filter(outcome="skipped").count() == op.skipped
    assert items.filter(outcome="failed").count() == op.failed
