"""Item outcomes and operation counters, written per outcome group (never per row)."""

from __future__ import annotations

import datetime
from typing import Any

from django.db import connection, connections
from django.db.models import Case, F, Value, When
from django.db.models.functions import Coalesce
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from bulkops.actions import reasons
from bulkops.actions.sql import AnyOf, any_of, plain_update
from bulkops.engine.eligibility import Partition
from bulkops.models import BulkOperation, BulkOperationItem, ItemOutcome, OperationStatus


def final_status(op: BulkOperation) -> str:
    """The final status: ``failed`` when every item failed, ``partial`` when some did,
    ``completed`` otherwise (all-skipped is completed)."""
    if op.failed and not (op.succeeded or op.skipped):
        return OperationStatus.FAILED
    if op.failed:
        return OperationStatus.PARTIAL
    return OperationStatus.COMPLETED


def close_remaining(op: BulkOperation, *, outcome: str, reason: str) -> int:
    """End every still-pending item of ``op`` with ``outcome``/``reason``; count them.
    A large operation has no item for the sessions its run did not reach: they are
    counted (``total - processed``) under ``outcome``'s counter, without items."""
    counter = "cancelled" if outcome == ItemOutcome.CANCELLED else "failed"
    if op.is_large:
        total, processed = BulkOperation.objects.values_list("total", "processed").get(pk=op.pk)
        n = max(total - processed, 0)
        BulkOperation.objects.filter(pk=op.pk).update(
            processed=F("processed") + n, **{counter: F(counter) + n}
        )
        return n
    n = BulkOperationItem.objects.filter(operation=op, outcome=ItemOutcome.PENDING).update(
        outcome=outcome, reason=reason, message=reasons.message_for(reason)
    )
    if n:
        BulkOperation.objects.filter(pk=op.pk).update(
            processed=F("processed") + n, **{counter: F(counter) + n}
        )
    return n


#: ``final_status`` in SQL, from the row's own counters (finalise needs no read first).
FINAL_STATUS_SQL = Case(
    When(failed__gt=0, succeeded=0, skipped=0, then=Value(OperationStatus.FAILED)),
    When(failed__gt=0, then=Value(OperationStatus.PARTIAL)),
    default=Value(OperationStatus.COMPLETED),
)


def finalise(op: BulkOperation, *, status: str | None = None, error: str = "") -> None:
    """Mark ``op`` finished (with ``status``, or the one its counters give) and load the
    row as it now is into ``op``."""
    now = timezone.now()
    update_and_reload(
        op,
        status=Value(status) if status else FINAL_STATUS_SQL,
        error=error,
        # A pause asked for during the last chunk: nothing is left to pause.
        pause_requested=False,
        finished_at=now,
        heartbeat_at=now,
        started_at=Coalesce(F("started_at"), Value(now)),
        version=F("version") + 1,
    )


def update_and_reload(op: BulkOperation, **values: Any) -> None:
    """``UPDATE`` the operation's row with ``values`` and load what the row then holds
    into ``op``: one ``UPDATE … RETURNING`` statement where the database has it
    (PostgreSQL; SQLite from 3.35), else the update and a reload."""
    rows = BulkOperation.objects.filter(pk=op.pk)
    database = connections[rows.db]
    if not database.features.can_return_columns_from_insert:
        rows.update(**values)
        op.refresh_from_db()
        return
    query = rows.query.chain(UpdateQuery)
    query.add_update_values(values)
    sql, params = query.get_compiler(rows.db).as_sql()
    fields = BulkOperation._meta.concrete_fields
    columns = ", ".join(database.ops.quote_name(f.column) for f in fields)
    fresh = next(iter(BulkOperation.objects.raw(f"{sql} RETURNING {columns}", params)), None)
    if fresh is None:  # the row is gone: as refresh_from_db says it
        op.refresh_from_db()
        return
    for f in fields:
        setattr(op, f.attname, getattr(fresh, f.attname))


def record_paused(op: BulkOperation) -> None:
    """Stop a running operation whose pause was asked for, between chunks: it becomes
    ``paused`` (its pending items stay pending) and the attempt is given back, as
    nothing crashed (a resume is not a retry). Reload it."""
    fresh = BulkOperation.objects.select_for_update().get(pk=op.pk)
    if fresh.status != OperationStatus.RUNNING:
        op.refresh_from_db()
        return
    now = timezone.now()
    update_and_reload(
        op,
        status=OperationStatus.PAUSED,
        pause_requested=False,
        paused_at=now,
        heartbeat_at=now,
        attempts=max(fresh.attempts - 1, 0),
        version=F("version") + 1,
    )


def fail_rest(op: BulkOperation, *, error: str) -> None:
    """A fatal end: every still-pending item fails ``internal_error``; the operation is
    ``failed`` with ``error``."""
    close_remaining(op, outcome=ItemOutcome.FAILED, reason=reasons.INTERNAL_ERROR)
    finalise(op, status=OperationStatus.FAILED, error=error)


def record_items(op: BulkOperation, part: Partition) -> None:
    """Write one chunk's item outcomes, one ``UPDATE`` per outcome group (succeeded
    items per status the session had before, kept as ``previous_status``).

    Each group's ids go in as one constant array (``session_id = ANY(…)``), never as a
    join with the chunk's rows: PostgreSQL finds the operation's items by the unique
    (operation, session_id) index and checks each against the array by hash, so the
    plan stays linear whatever the statistics say about items per operation."""
    for previous, ids in part.eligible_by_status.items():
        _set_items(op, ids, outcome=ItemOutcome.SUCCEEDED, reason="", message="",
                   previous_status=previous)  # fmt: skip
    groups = [(ItemOutcome.SKIPPED, r, ids) for r, ids in part.skipped.items()]
    groups += [(ItemOutcome.FAILED, r, ids) for r, ids in part.failed.items()]
    for outcome, reason, ids in groups:
        _set_items(op, ids, outcome=outcome, reason=reason, message=reasons.message_for(reason))


def _set_items(op: BulkOperation, ids: list[str], **values: str) -> None:
    """One plain ``UPDATE`` of ``op``'s items of ``ids`` (``plain_update``)."""
    match, params = any_of('"session_id"', ids)
    plain_update(BulkOperationItem, values, f'"operation_id" = %s AND {match}', [op.pk, *params])


def create_items(op: BulkOperation, ids: list[str]) -> None:
    """One pending item per id: on PostgreSQL one ``INSERT … SELECT unnest(%s)`` with
    the ids as one array (one statement, nothing returned); elsewhere ``bulk_create``."""
    if connection.vendor != "postgresql":
        BulkOperationItem.objects.bulk_create(
            (BulkOperationItem(operation=op, session_id=sid) for sid in ids), batch_size=1000
        )
        return
    if ids:
        _insert_items("SELECT %s, sid, %s, '', '', '' FROM unnest(%s::text[]) AS sid",
                      [op.pk, ItemOutcome.PENDING, ids])  # fmt: skip


def create_items_with_outcomes(op: BulkOperation, part: Partition) -> None:
    """One item per id of a chunk that ran before its items were written (an inline
    run's), each with the outcome ``part`` gives it: one ``INSERT`` of every outcome
    group at once, where a pending item written first and then its outcome cost two
    statements and a dead row per item."""
    rows = [(sid, ItemOutcome.SUCCEEDED, "", "", previous)
            for previous, ids in part.eligible_by_status.items() for sid in ids]  # fmt: skip
    for outcome, groups in ((ItemOutcome.SKIPPED, part.skipped), (ItemOutcome.FAILED, part.failed)):
        for reason, ids in groups.items():
            rows += [(sid, outcome, reason, reasons.message_for(reason), "") for sid in ids]
    if connection.vendor != "postgresql":
        fields = ("session_id", "outcome", "reason", "message", "previous_status")
        BulkOperationItem.objects.bulk_create(
            BulkOperationItem(operation=op, **dict(zip(fields, row, strict=True))) for row in rows
        )
        return
    if rows:
        columns = [list(column) for column in zip(*rows, strict=True)]
        unnest = ", ".join(["%s::text[]"] * len(columns))
        _insert_items(f"SELECT %s, * FROM unnest({unnest})", [op.pk, *columns])


def _insert_items(select: str, params: list) -> None:
    table = connection.ops.quote_name(BulkOperationItem._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (operation_id, session_id, outcome, reason, message, "
            f"previous_status) {select}",
            params,
        )


def record_counters(
    op: BulkOperation,
    *,
    succeeded: int,
    skipped: int,
    failed: int,
    now: datetime.datetime,
    unless_cancelled: bool = False,
) -> bool:
    """Add to the operation's counters (one ``UPDATE``), bump its version and
    heartbeat, and keep ``op`` as the row now is (the caller holds the row's lock or is
    its only writer), so a progress event needs no reload. ``unless_cancelled``: write
    nothing when a cancel was asked for. Return whether the row was written."""
    rows = BulkOperation.objects.filter(pk=op.pk)
    if unless_cancelled:
        rows = rows.filter(cancel_requested=False)
    written = rows.update(
        processed=F("processed") + succeeded + skipped + failed,
        succeeded=F("succeeded") + succeeded,
        skipped=F("skipped") + skipped,
        failed=F("failed") + failed,
        version=F("version") + 1,
        heartbeat_at=now,
    )
    if written:
        op.processed += succeeded + skipped + failed
        op.succeeded += succeeded
        op.skipped += skipped
        op.failed += failed
        op.version += 1
        op.heartbeat_at = now
    return bool(written)


def record(op: BulkOperation, part: Partition, now: datetime.datetime) -> None:
    """Record one chunk: its items' outcomes, then the operation's counters."""
    record_items(op, part)
    record_counters(
        op,
        succeeded=len(part.eligible),
        skipped=part.skipped_count,
        failed=part.failed_count,
        now=now,
    )


def record_atomic_rollback(op: BulkOperation, failures: dict[str, list[str]]) -> str:
    """After an all-or-nothing operation rolled back: the culprits keep their reason,
    every other item fails ``atomic_rollback``. Return the operation's error text."""
    culprits = 0
    for reason, ids in failures.items():
        culprits += len(ids)
        BulkOperationItem.objects.filter(AnyOf("session_id", ids), operation=op).update(
            outcome=ItemOutcome.FAILED, reason=reason, message=reasons.message_for(reason)
        )
    close_remaining(op, outcome=ItemOutcome.FAILED, reason=reasons.ATOMIC_ROLLBACK)
    BulkOperation.objects.filter(pk=op.pk).update(
        processed=op.total, failed=op.total, succeeded=0, skipped=0
    )
    return (
        f"All-or-nothing operation rolled back: {culprits} of {op.total} sessions "
        "could not be processed; nothing was changed."
    )
