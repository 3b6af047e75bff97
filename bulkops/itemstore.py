"""An operation's items, however they are kept: read them here.

A small operation keeps one ``BulkOperationItem`` per session. A large one keeps, per
committed chunk, one ``OperationChunk`` — the sessions it applied the action to and the
status each had before, the sessions it skipped and their reason codes, as arrays (a
skipped session's message is its reason's) — and an item only per failed session (what
a retry takes). That is about 18 bytes per session instead of about 300
(``docs/benchmarks.md``). Read back, both look the same: rows of ``session_id, outcome,
reason, message, previous_status`` in session-id order.

The chunks of one operation cover disjoint id ranges, and each failed item lies within
its chunk's range. So a position in the merged, ordered list is found from
the chunks' counts alone (a few hundred small rows per million sessions), and only the
chunks around it are unpacked: a page, a report piece, a batch of an undo reads a
bounded range whatever the operation's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from bulkops.actions.reasons import message_for
from bulkops.actions.sql import AnyOf, in_key_order
from bulkops.models import BulkOperation, BulkOperationItem, ItemOutcome, OperationChunk

FIELDS = ("session_id", "outcome", "reason", "message", "previous_status")
#: Rows per range read when streaming a whole operation (a report, a batch walk).
STREAM_ROWS = 20_000


def has_chunks(operation_id: str) -> bool:
    return OperationChunk.objects.filter(operation_id=operation_id).exists()


def is_compact(operation: BulkOperation) -> bool:
    """Whether ``operation``'s succeeded sessions are kept in chunks (a large
    operation that has committed a chunk), not as items."""
    return bool(operation.is_large and has_chunks(operation.pk))


@dataclass(frozen=True)
class Span:
    """One chunk as the index knows it: its range and its count of one outcome."""

    first_id: str
    last_id: str
    count: int
    #: Its sessions that are not in ``session_ids`` (skipped and failed).
    others: int = 0


def _count_sql(outcome: str | None) -> str:
    return {
        None: "succeeded + skipped + failed",
        ItemOutcome.SUCCEEDED: "succeeded",
        ItemOutcome.SKIPPED: "skipped",
        ItemOutcome.FAILED: "failed",
    }.get(outcome, "0")


def spans(operation_id: str, outcome: str | None) -> list[Span]:
    """Every chunk of the operation in id order with its count of ``outcome`` (None:
    every outcome); chunks with none of them are left out."""
    table = connection.ops.quote_name(OperationChunk._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT first_id, last_id, {_count_sql(outcome)}, skipped + failed FROM {table} "
            "WHERE operation_id = %s ORDER BY first_id",
            [operation_id],
        )
        return [Span(*row) for row in cursor.fetchall() if row[2]]


_SUCCEEDED_BRANCH = (
    "SELECT u.sid, 'succeeded'::text AS outcome, ''::text AS reason, ''::text AS message, "
    "u.previous FROM {chunks} AS c CROSS JOIN LATERAL "
    "unnest(c.session_ids, c.previous_statuses) AS u(sid, previous) "
    "WHERE c.operation_id = %s AND c.first_id >= %s AND c.first_id <= %s AND c.last_id <= %s"
)
_SKIPPED_BRANCH = (
    "SELECT u.sid, 'skipped'::text, u.reason, ''::text, ''::text FROM {chunks} AS c "
    "CROSS JOIN LATERAL unnest(c.skipped_ids, c.skipped_reasons) AS u(sid, reason) "
    "WHERE c.operation_id = %s AND c.first_id >= %s AND c.first_id <= %s AND c.last_id <= %s"
)
_ITEMS_BRANCH = (
    "SELECT session_id::text, outcome::text, reason::text, message::text, "
    "previous_status::text FROM {items} WHERE operation_id = %s "
    "AND session_id >= %s AND session_id <= %s"
)


def _range_query(
    operation_id: str, outcome: str | None, first: str, last: str
) -> tuple[str, list[Any]]:
    """The rows of the chunks within ``[first, last]`` (a range from one chunk's start
    to another's end) and of the items within it, merged in id order."""
    names = {
        "chunks": connection.ops.quote_name(OperationChunk._meta.db_table),
        "items": connection.ops.quote_name(BulkOperationItem._meta.db_table),
    }
    branches: list[str] = []
    params: list[Any] = []
    if outcome in (None, ItemOutcome.SUCCEEDED):
        branches.append(_SUCCEEDED_BRANCH.format(**names))
        params += [operation_id, first, last, last]
    if outcome in (None, ItemOutcome.SKIPPED):
        branches.append(_SKIPPED_BRANCH.format(**names))
        params += [operation_id, first, last, last]
    if outcome not in (ItemOutcome.SUCCEEDED, ItemOutcome.SKIPPED):
        only = " AND outcome = %s" if outcome else ""
        branches.append(_ITEMS_BRANCH.format(**names) + only)
        params += [operation_id, first, last, *([outcome] if outcome else [])]
    return f"SELECT * FROM ({' UNION ALL '.join(branches)}) AS t ORDER BY 1", params


def _with_messages(rows: Iterator[tuple]) -> list[tuple]:
    """A skipped session read from a chunk gets its reason's message, as an item has
    (each message looked up once: a translation lookup per row would cost more than
    the read)."""
    messages: dict[str, str] = {}
    found = []
    for row in rows:
        if row[1] == ItemOutcome.SKIPPED and not row[3]:
            message = messages.get(row[2])
            if message is None:
                message = messages[row[2]] = str(message_for(row[2]))
            row = (row[0], row[1], row[2], message, row[4])
        found.append(row)
    return found


def range_rows(
    operation_id: str,
    outcome: str | None,
    first: str,
    last: str,
    *,
    offset: int = 0,
    limit: int | None = None,
) -> list[tuple[str, str, str, str, str]]:
    """The rows (``FIELDS``) of the chunks within ``[first, last]`` (``first``: a chunk's
    first id, ``last``: a chunk's last id), in id order, optionally a window of them."""
    sql, params = _range_query(operation_id, outcome, first, last)
    if offset:
        sql, params = f"{sql} OFFSET %s", [*params, offset]
    if limit is not None:
        sql, params = f"{sql} LIMIT %s", [*params, limit]
    # One row of five arrays, not a row per session: psycopg parses an array in C, and
    # building a Python row per session costs more than the read itself. The arrays
    # keep the subquery's order (a plain aggregate over an ordered subquery).
    sql = (
        "SELECT array_agg(sid), array_agg(outcome), array_agg(reason), array_agg(message), "
        f"array_agg(previous) FROM ({sql}) AS r(sid, outcome, reason, message, previous)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        columns = cursor.fetchone()
    if not columns or columns[0] is None:
        return []
    return _with_messages(zip(*columns, strict=True))


def groups(found: list[Span], size: int) -> Iterator[tuple[str, str, bool]]:
    """``found`` cut into runs of consecutive chunks of about ``size`` rows: the
    ``(first, last)`` ids of each run, for ``range_rows``, and whether any of its
    sessions is not in the chunks' ``session_ids`` (skipped or failed)."""
    start, rows, items = 0, 0, 0
    for n, span in enumerate(found):
        rows += span.count
        items += span.others
        if rows >= size or n == len(found) - 1:
            yield found[start].first_id, span.last_id, bool(items)
            start, rows, items = n + 1, 0, 0


def succeeded_rows(operation_id: str, first: str, last: str) -> Iterator[tuple[str, ...]]:
    """The rows (``FIELDS``) of the succeeded sessions of the chunks within ``[first,
    last]``, straight from their arrays: each is in id order and the chunks' ranges are
    disjoint, so no sort is needed."""
    table = connection.ops.quote_name(OperationChunk._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT session_ids, previous_statuses FROM {table} WHERE operation_id = %s "
            "AND first_id >= %s AND first_id <= %s AND last_id <= %s ORDER BY first_id",
            [operation_id, first, last, last],
        )
        for sids, previous in cursor.fetchall():
            for sid, was in zip(sids, previous, strict=True):
                yield (sid, ItemOutcome.SUCCEEDED.value, "", "", was)


class CompactItems:
    """A compact operation's items of one outcome (None: all), as Django's paginator
    reads a queryset: ``count()`` and slices of rows (dicts of ``FIELDS``)."""

    def __init__(self, operation: BulkOperation, outcome: str | None) -> None:
        self.operation_id, self.outcome = operation.pk, outcome
        self._spans: list[Span] | None = None

    @property
    def index(self) -> list[Span]:
        if self._spans is None:
            self._spans = spans(self.operation_id, self.outcome)
        return self._spans

    def count(self) -> int:
        return sum(span.count for span in self.index)

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, window: slice) -> list[dict[str, str]]:
        if not isinstance(window, slice) or window.step not in (None, 1):
            raise TypeError("CompactItems takes plain slices")
        start, stop, _ = window.indices(self.count())
        if stop <= start:
            return []
        first = last = None
        before = seen = 0
        for span in self.index:
            if first is None and seen + span.count > start:
                first, before = span.first_id, seen
            seen += span.count
            if first is not None:
                last = span.last_id
                if seen >= stop:
                    break
        rows = range_rows(
            self.operation_id,
            self.outcome,
            first,
            last,
            offset=start - before,
            limit=stop - start,
        )
        return [dict(zip(FIELDS, row, strict=True)) for row in rows]


def operation_items(
    *, operation: BulkOperation, outcome: str | None = None
) -> QuerySet[BulkOperationItem] | CompactItems:
    """The operation's items in session-id order, optionally of one outcome: a
    queryset, or for a compact operation a ``CompactItems`` (rows as dicts)."""
    if is_compact(operation):
        return CompactItems(operation, outcome)
    qs = BulkOperationItem.objects.filter(operation=operation).order_by("session_id")
    if outcome:
        qs = qs.filter(outcome=outcome)
    return qs


def item_rows(
    *, operation: BulkOperation, outcome: str | None, fields: tuple[str, ...], batch: int
) -> Iterator[tuple[str, ...]]:
    """Every item of ``operation`` (of ``outcome``) as a tuple of ``fields``, in
    session-id order, read ``batch`` rows (a queryset) or about ``STREAM_ROWS`` rows
    (chunks) per round trip: memory stays flat however many there are."""
    if not is_compact(operation):
        items = operation_items(operation=operation, outcome=outcome)
        yield from items.values_list(*fields).iterator(chunk_size=batch)
        return
    pick = itemgetter(*(FIELDS.index(f) for f in fields))
    if len(fields) == 1:
        pick = (lambda one: lambda row: (one(row),))(pick)
    if outcome not in (None, ItemOutcome.SUCCEEDED, ItemOutcome.SKIPPED):  # items only
        items = BulkOperationItem.objects.filter(operation=operation, outcome=outcome)
        yield from items.order_by("session_id").values_list(*fields).iterator(chunk_size=batch)
        return
    for first, last, with_items in groups(spans(operation.pk, outcome), STREAM_ROWS):
        if outcome == ItemOutcome.SKIPPED or (with_items and outcome is None):
            rows = iter(range_rows(operation.pk, outcome, first, last))
        else:
            rows = succeeded_rows(operation.pk, first, last)
        yield from map(pick, rows)


def succeeded_ids(*, operation_id: str, limit: int) -> list[str]:
    """The first ``limit`` sessions the operation applied its action to, in id order."""
    found = spans(operation_id, ItemOutcome.SUCCEEDED)
    if not found:
        items = BulkOperationItem.objects.filter(
            operation_id=operation_id, outcome=ItemOutcome.SUCCEEDED
        ).order_by("session_id")
        return list(items.values_list("session_id", flat=True)[:limit])
    ids: list[str] = []
    for first, last, _ in groups(found, limit):
        ids += [row[0] for row in range_rows(operation_id, ItemOutcome.SUCCEEDED, first, last)]
        if len(ids) >= limit:
            break
    return ids[:limit]


#: Chunk rows read per round trip while finding the ones that hold the next sessions.
HEADER_PAGE = 32
#: The chunk whose range passes ``after`` (the nearest start at or before it; not
#: counted: some of its sessions lie before ``after``), then the next chunks' starts and
#: counts — each branch a walk of the (operation, first_id) index from ``after``.
_HOLDING = (
    "SELECT first_id, 0, false FROM (SELECT first_id, last_id FROM {chunks} "
    "WHERE operation_id = %s AND first_id <= %s ORDER BY first_id DESC LIMIT 1) AS h "
    "WHERE last_id > %s UNION ALL "
)
_FOLLOWING = (
    "(SELECT first_id, succeeded, true FROM {chunks} WHERE operation_id = %s "
    "AND first_id > %s AND (%s = '' OR first_id <= %s) ORDER BY first_id LIMIT %s)"
)


def _chunk_run(operation_id: str, after: str, through: str, size: int) -> tuple[str, str]:
    """The first and last start (``first_id``) of the run of chunks that holds the next
    ``size`` succeeded sessions past ``after`` (up to ``through``), counted by their
    ``succeeded``, never by opening an array; ("", "") when there is none. Chunk rows
    are read a page at a time from ``after``, whatever the number of chunks before it."""
    chunks = connection.ops.quote_name(OperationChunk._meta.db_table)
    first = last = ""
    held, past, holding = 0, after, bool(after)
    with in_key_order(), connection.cursor() as cursor:
        while True:
            sql = (_HOLDING if holding else "") + _FOLLOWING
            params = [operation_id, after, after] if holding else []
            params += [operation_id, past, through, through, HEADER_PAGE]
            cursor.execute(sql.format(chunks=chunks), params)
            page = cursor.fetchall()
            first = next((start for start, _, counted in page if not counted), first)
            following = [(start, n) for start, n, counted in page if counted]
            for start, succeeded in following:
                first, last = first or start, start
                held += succeeded
                if held >= size:
                    return first, last
            if len(following) < HEADER_PAGE:
                return first, last or first
            past, holding = following[-1][0], False


def succeeded_after(*, operation_id: str, after: str, through: str, size: int) -> list[str]:
    """The next ``size`` sessions the operation applied its action to past ``after``
    (up to ``through``; "": no bound), in id order. Only the chunks that can hold them
    are unpacked — one key range of chunk rows, found from their counts — so each call
    costs about ``size`` sessions and a few chunk rows, however large the operation."""
    first, last = _chunk_run(operation_id, after, through, size)
    if not first:
        return []
    chunks = connection.ops.quote_name(OperationChunk._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT u.sid FROM {chunks} AS c CROSS JOIN LATERAL unnest(c.session_ids) AS u(sid) "
            "WHERE c.operation_id = %s AND c.first_id >= %s AND c.first_id <= %s "
            "AND u.sid > %s AND (%s = '' OR u.sid <= %s) ORDER BY 1 LIMIT %s",
            [operation_id, first, last, after, through, through, size],
        )
        return [row[0] for row in cursor.fetchall()]


def has_succeeded(operation: BulkOperation) -> bool:
    """Whether any session of ``operation`` succeeded (was acted on)."""
    if is_compact(operation):
        return bool(spans(operation.pk, ItemOutcome.SUCCEEDED))
    return operation.items.filter(outcome=ItemOutcome.SUCCEEDED).exists()


def previous_statuses(*, operation_id: str, ids: list[str]) -> dict[str, str]:
    """The status each of ``ids`` had just before ``operation_id`` acted on it (the
    ones it succeeded on; the rest are absent)."""
    if not ids:
        return {}
    found = dict(
        BulkOperationItem.objects.filter(
            AnyOf("session_id", ids), operation_id=operation_id, outcome=ItemOutcome.SUCCEEDED
        ).values_list("session_id", "previous_status")
    )
    if connection.vendor != "postgresql":
        return found
    chunks = connection.ops.quote_name(OperationChunk._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH b AS (SELECT min(x) AS lo, max(x) AS hi FROM unnest(%s::text[]) AS x) "
            f"SELECT u.sid, u.previous FROM {chunks} AS c CROSS JOIN LATERAL "
            "unnest(c.session_ids, c.previous_statuses) AS u(sid, previous) "
            "WHERE c.operation_id = %s AND u.sid = ANY(%s::text[]) "
            # One key range of chunk rows: from the chunk whose range holds the lowest
            # id (the nearest start at or before it) to the last one starting at or
            # before the highest — compared by the database's collation, as the ranges
            # were written — whatever the number of chunks outside it.
            f"AND c.first_id >= coalesce((SELECT h.first_id FROM {chunks} AS h "
            "WHERE h.operation_id = %s AND h.first_id <= (SELECT lo FROM b) "
            "ORDER BY h.first_id DESC LIMIT 1), (SELECT lo FROM b)) "
            "AND c.first_id <= (SELECT hi FROM b) AND c.last_id >= (SELECT lo FROM b)",
            [ids, operation_id, ids, operation_id],
        )
        found.update(cursor.fetchall())
    return found
