"""Counts of an operation's items, and one session's items across operations, however
the items are kept (``bulkops.itemstore``: a row per session, or a large operation's
chunk rows plus an item per failed session).

The admin's item counts and session history and the CLI's reason summary read here, so
that a large operation's succeeded and skipped sessions — which have no item row — are
counted and found like anyone else's.
"""

from __future__ import annotations

from collections import Counter

from django.db import connection
from django.db.models import Count

from bulkops.actions.reasons import message_for
from bulkops.itemstore import is_compact
from bulkops.models import BulkOperation, BulkOperationItem, ItemOutcome, OperationChunk


def _chunks_table() -> str:
    return connection.ops.quote_name(OperationChunk._meta.db_table)


def outcome_counts(operation: BulkOperation) -> dict[str, int]:
    """``{outcome: how many sessions}`` of the operation's items (outcomes with none
    are absent)."""
    counts = Counter(
        dict(operation.items.values_list("outcome").annotate(n=Count("id")).order_by())
    )
    if is_compact(operation):
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT coalesce(sum(succeeded), 0), coalesce(sum(skipped), 0) "
                f"FROM {_chunks_table()} WHERE operation_id = %s",
                [operation.pk],
            )
            succeeded, skipped = cursor.fetchone()
        counts[ItemOutcome.SUCCEEDED] += succeeded
        counts[ItemOutcome.SKIPPED] += skipped
    return {outcome: n for outcome, n in counts.items() if n}


def reason_counts(operation: BulkOperation, *, outcomes: tuple[str, ...]) -> dict[str, int]:
    """``{reason code: how many sessions}`` of the items with one of ``outcomes``,
    counted in SQL (a large operation's sessions are millions)."""
    counts = Counter(
        dict(
            operation.items.filter(outcome__in=outcomes)
            .values_list("reason")
            .annotate(n=Count("id"))
            .order_by()
        )
    )
    if ItemOutcome.SKIPPED in outcomes and is_compact(operation):
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT r.reason, count(*) FROM {_chunks_table()} AS c CROSS JOIN LATERAL "
                "unnest(c.skipped_reasons) AS r(reason) WHERE c.operation_id = %s "
                "AND c.skipped > 0 GROUP BY r.reason",
                [operation.pk],
            )
            counts.update(dict(cursor.fetchall()))
    return dict(counts)


def session_items(*, operation_ids: list[str], session_id: str) -> list[BulkOperationItem]:
    """The items of ``session_id`` in the operations ``operation_ids`` (with their
    operation and its user): item rows, and — for large operations — what their chunk
    rows say of it, as unsaved items."""
    found = list(
        BulkOperationItem.objects.filter(
            operation_id__in=operation_ids, session_id=session_id
        ).select_related("operation", "operation__user")
    )
    if connection.vendor != "postgresql" or not operation_ids:
        return found
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.operation_id, %s, '', u.previous FROM {_chunks_table()} AS c "
            "CROSS JOIN LATERAL unnest(c.session_ids, c.previous_statuses) AS u(sid, previous) "
            "WHERE c.operation_id = ANY(%s::text[]) AND c.first_id <= %s AND c.last_id >= %s "
            "AND u.sid = %s "
            f"UNION ALL SELECT c.operation_id, %s, s.reason, '' FROM {_chunks_table()} AS c "
            "CROSS JOIN LATERAL unnest(c.skipped_ids, c.skipped_reasons) AS s(sid, reason) "
            "WHERE c.operation_id = ANY(%s::text[]) AND c.first_id <= %s AND c.last_id >= %s "
            "AND s.sid = %s",
            [
                ItemOutcome.SUCCEEDED.value, operation_ids, session_id, session_id, session_id,
                ItemOutcome.SKIPPED.value, operation_ids, session_id, session_id, session_id,
            ],
        )  # fmt: skip
        rows = cursor.fetchall()
    if not rows:
        return found
    operations = BulkOperation.objects.select_related("user").in_bulk({row[0] for row in rows})
    return found + [
        BulkOperationItem(
            operation=operations[op_id],
            session_id=session_id,
            outcome=outcome,
            reason=reason,
            message=message_for(reason) if reason else "",
            previous_status=previous,
        )
        for op_id, outcome, reason, previous in rows
    ]
