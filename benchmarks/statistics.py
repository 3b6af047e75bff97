"""The planner statistics the engine is measured under.

The bench never analyses the item and operation tables itself: every figure is taken on
the statistics the database already has, as in production, where a chunk runs right
after the API wrote its operation's items and no ``ANALYZE`` has seen them. Two
starting points (``--statistics``):

* ``as-found`` — whatever this database holds (a fresh deployment: no statistics at all);
* ``production`` — a deployment that has run many small operations: ``history``
  one-session operations of the bench owner, in the shape the engine leaves them (one
  completed operation, one succeeded item), written set-based before anything is timed,
  then analysed as autovacuum would after such a burst. The planner then believes that
  an operation has about one item — which is what made a 1,000-row chunk plan a nested
  loop over the items in production.

:func:`item_statistics` says what the planner believes at a given moment (recorded
before every case, so a figure taken after autovacuum changed them says so).
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from bulkops.models import BulkOperation, BulkOperationItem

STATISTICS = ("as-found", "production")
DEFAULT_HISTORY = 20_000
OPERATION_TABLE = BulkOperation._meta.db_table
ITEM_TABLE = BulkOperationItem._meta.db_table
#: Rows per bulk_create batch while writing the history.
BATCH = 2000


def seed_history(*, owner, operations: int) -> float:
    """Write ``operations`` finished one-session close operations of ``owner`` (items
    naming sessions that do not exist: the history is only there for its statistics),
    then analyse both tables. Return the seconds it took."""
    started = timezone.now()
    token = secrets.token_hex(4)
    for first in range(0, operations, BATCH):
        numbers = range(first, min(operations, first + BATCH))
        ops = [_history_operation(owner, token, n, started) for n in numbers]
        with transaction.atomic():
            BulkOperation.objects.bulk_create(ops, batch_size=BATCH)
            BulkOperationItem.objects.bulk_create(
                [
                    BulkOperationItem(
                        operation=op,
                        session_id=f"history-{token}-{n}",
                        outcome="succeeded",
                        previous_status="active",
                    )
                    for op, n in zip(ops, numbers, strict=True)
                ],
                batch_size=BATCH,
            )
    analyze()
    return (timezone.now() - started).total_seconds()


def _history_operation(owner, token: str, n: int, now) -> BulkOperation:
    moment = now - timedelta(seconds=n)
    return BulkOperation(
        id=f"op-{token}{n:024x}",
        user=owner,
        action="close",
        source="api",
        status="completed",
        total=1,
        processed=1,
        succeeded=1,
        created_at=moment,
        started_at=moment,
        finished_at=moment,
        attempts=1,
        version=3,
    )


def analyze() -> None:
    """What autovacuum does after a burst of writes: fresh statistics of the operation and
    item tables (``ANALYZE``; SQLite's too). Called only before anything is timed."""
    with connection.cursor() as cursor:
        for table in (OPERATION_TABLE, ITEM_TABLE):
            cursor.execute(f"ANALYZE {table}")


def item_statistics() -> dict[str, Any]:
    """What the planner believes about the item table now: its row estimate, the number of
    distinct operations, so the items per operation it expects (PostgreSQL), when the
    table was last analysed (by hand or by autovacuum) and how often by hand."""
    if connection.vendor != "postgresql":
        return {"vendor": connection.vendor}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.reltuples, s.n_distinct, t.last_analyze, t.last_autoanalyze, "
            "t.analyze_count "
            "FROM pg_class c JOIN pg_stat_user_tables t ON t.relid = c.oid "
            "LEFT JOIN pg_stats s ON s.tablename = c.relname AND s.attname = 'operation_id' "
            "WHERE c.relname = %s",
            [ITEM_TABLE],
        )
        row = cursor.fetchone()
    if row is None:
        return {"vendor": "postgresql"}
    reltuples, n_distinct, last_analyze, last_autoanalyze, analyze_count = row
    rows = max(float(reltuples), 0.0)
    # n_distinct < 0 is a fraction of the rows (PostgreSQL's convention).
    distinct = -n_distinct * rows if n_distinct is not None and n_distinct < 0 else n_distinct
    return {
        "vendor": "postgresql",
        "item_rows_estimate": round(rows),
        "distinct_operations_estimate": round(distinct) if distinct else None,
        "items_per_operation_estimate": round(rows / distinct, 1) if distinct else None,
        "last_analyze": last_analyze.isoformat() if last_analyze else None,
        "last_autoanalyze": last_autoanalyze.isoformat() if last_autoanalyze else None,
        "analyze_count": analyze_count,
    }
