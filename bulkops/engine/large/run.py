"""A large operation's run: its selection resolved slice by slice over the
primary key, in the same time-boxed chunks as every operation.

A large operation has no items when it is created. Its ``selection`` — a filter, or the
items of an earlier operation (a retry's, an undo's) — is resolved by the worker in
session-id order, a keyset walk: each chunk takes the next sessions past its slice's
``cursor``. A chunk, in one transaction:

1. reads the next ids (a filter: the matching ids within the next *window* of the
   primary key, so a chunk never scans far for sparse matches — its width follows the
   share of matching rows seen so far);
2. locks, re-checks and applies them as every chunk does (``chunks.apply_chunk``); for
   a filter the locking statement applies the filter again, so a session that stopped
   matching since step 1 is left alone (no item: it is not part of the operation);
3. writes what it did compactly — one ``OperationChunk`` row (the sessions it acted on
   and their previous statuses, the ones it skipped and why, as arrays) and an item
   per failed session
   (``bulkops.itemstore`` reads them back as items) — the counters, and the slice's
   new cursor.

So what is acted on is what matches when its chunk runs. The cursor commits with the
chunk's changes, or rolls back with them: a resumed run (after a crash, a pause, a
hand-off) starts right after the last committed chunk and acts on no session twice.
Sessions created after the operation (``created_at`` later than its creation) are not
selected; a session that starts matching the filter before the walk reaches it is.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db import connection
from django.db.models import F, QuerySet
from django.db.models.functions import Greatest
from django.utils.dateparse import parse_datetime

from bulkops import itemstore
from bulkops.actions import reasons
from bulkops.actions.base import BulkAction
from bulkops.actions.sql import array_param, in_key_order
from bulkops.engine.chunks import apply_chunk
from bulkops.engine.eligibility import Partition
from bulkops.engine.outcomes import update_and_reload
from bulkops.engine.selection import ItemsOf, selection_queryset
from bulkops.models import (
    BulkOperation,
    BulkOperationItem,
    ItemOutcome,
    OperationChunk,
    OperationSlice,
    OperationStatus,
    Session,
)

#: The most primary-key entries a filter's window spans (a sparse filter): an
#: index-only walk of this many keys takes a few tens of milliseconds.
MAX_WINDOW = 100_000


@dataclass(frozen=True)
class Batch:
    """The next sessions of a slice: ``ids`` to act on, where the cursor moves once they
    are done, and whether the slice then has nothing left."""

    ids: list[str]
    cursor: str
    last: bool


def _keys(qs: QuerySet, key: str, size: int, *, skip: int = 0) -> list[str]:
    """``size`` values of ``key`` in ``qs`` (ordered by it) after the first ``skip``,
    read in key order."""
    with in_key_order():
        return list(qs.values_list(key, flat=True)[skip : skip + size])


def _past(qs: QuerySet, key: str, *, after: str, through: str) -> QuerySet:
    if after:
        qs = qs.filter(**{f"{key}__gt": after})
    if through:
        qs = qs.filter(**{f"{key}__lte": through})
    return qs.order_by(key)


@dataclass(frozen=True)
class Window:
    """A filter's matching sessions past ``after`` up to ``end`` (None: up to the
    slice's end), ``width`` primary-key entries wide; ``rows`` in key order."""

    rows: QuerySet
    after: str
    end: str | None
    width: int


class FilterSource:
    """The sessions a filter matches, walked by primary key in windows."""

    #: An id that no longer matches when its chunk locks it is not part of the
    #: operation: it gets no item (not ``not_found``).
    drops_missing = True

    def __init__(self, op: BulkOperation, act: BulkAction) -> None:
        spec = op.selection or {}
        matching = selection_queryset(user=op.user, action=act, filters=spec["filter"])
        until = parse_datetime(spec.get("created_until", ""))
        self.lock_scope = matching.filter(created_at__lte=until) if until else matching
        self.ratio = 1.0  # the share of a window's rows that matched, as last seen

    def _window_end(self, *, after: str, through: str, width: int) -> str | None:
        """The ``width``-th session id past ``after`` (None: fewer are left)."""
        ids = _past(Session.objects.all(), "pk", after=after, through=through)
        return next(iter(_keys(ids, "pk", 1, skip=width - 1)), None)

    def window(self, *, after: str, through: str, size: int) -> Window:
        """Where the next ``size`` matching sessions past ``after`` are looked for."""
        width = min(max(int(size / self.ratio), size), max(MAX_WINDOW, size))
        end = self._window_end(after=after, through=through, width=width)
        rows = _past(self.lock_scope, "pk", after=after, through=end or through)
        return Window(rows, after, end, width)

    def batch(self, window: Window, ids: list[str], *, size: int) -> Batch:
        """The batch of ``ids``: the first ``size`` (or fewer) of ``window.rows``."""
        if len(ids) == size:
            return Batch(ids, ids[-1], last=False)
        if window.end is not None:
            self.ratio = max(len(ids), 1) / window.width / 2  # none found: twice as wide
            return Batch(ids, window.end, last=False)
        return Batch(ids, ids[-1] if ids else window.after, last=True)

    def next_batch(self, *, after: str, through: str, size: int) -> Batch:
        window = self.window(after=after, through=through, size=size)
        return self.batch(window, _keys(window.rows, "pk", size), size=size)


class ItemsSource:
    """The items of an earlier operation with one outcome, walked by session id (a
    compact operation's succeeded sessions: through its chunks)."""

    drops_missing = False

    def __init__(self, op: BulkOperation, act: BulkAction, scope: QuerySet[Session]) -> None:
        self.of = ItemsOf.of_spec(op.selection or {})
        self.items = self.of.items()
        self.in_chunks = self.of.in_chunks
        self.lock_scope = scope

    def next_batch(self, *, after: str, through: str, size: int) -> Batch:
        if self.in_chunks:
            ids = itemstore.succeeded_after(
                operation_id=self.of.operation_id, after=after, through=through, size=size
            )
        else:
            ids = _keys(_past(self.items, "session_id", after=after, through=through),
                        "session_id", size)  # fmt: skip
        return Batch(ids, ids[-1] if ids else after, last=len(ids) < size)


def source_for(op: BulkOperation, act: BulkAction, scope: QuerySet[Session]):
    if "filter" in (op.selection or {}):
        return FilterSource(op, act)
    return ItemsSource(op, act, scope)


# --- recording --------------------------------------------------------------------------------
def insert_items(op: BulkOperation, part: Partition) -> None:
    """The chunk's failed items (what a retry takes), in one ``INSERT … SELECT unnest``."""
    rows = [(sid, r) for r, sids in part.failed.items() for sid in sids]
    if not rows:
        return
    sids, codes = (list(column) for column in zip(*rows, strict=True))
    messages = [reasons.message_for(code) for code in codes]
    table = connection.ops.quote_name(BulkOperationItem._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (operation_id, session_id, outcome, reason, message, "
            "previous_status) SELECT %s, t.sid, %s, t.reason, t.message, '' "
            "FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(sid, reason, message)",
            [op.pk, ItemOutcome.FAILED.value, sids, codes, messages],
        )


def _pairs(groups: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """``{key: ids}`` as two parallel lists: the ids, and each one's key."""
    pairs = [(sid, key) for key, sids in groups.items() for sid in sids]
    return [sid for sid, _ in pairs], [key for _, key in pairs]


#: Two parallel text arrays as one array per column, sorted by the first by the
#: database (in its collation, as every range read compares ids).
_SORTED_PAIRS = (
    "(SELECT coalesce(array_agg(a ORDER BY a), '{}') FROM unnest(%s::text[]) AS a), "
    "(SELECT coalesce(array_agg(b ORDER BY a), '{}') FROM unnest(%s::text[], %s::text[]) "
    "AS t(a, b))"
)


#: The columns a chunk row is written with.
_CHUNK_COLUMNS = (
    "(operation_id, first_id, last_id, session_ids, previous_statuses, skipped_ids, "
    "skipped_reasons, succeeded, skipped, failed)"
)


def insert_chunk(op: BulkOperation, part: Partition, *, first: str, last: str) -> None:
    """What the chunk over ``first`` … ``last`` did, as one ``OperationChunk`` row: the
    sessions it acted on with their previous statuses, the ones it skipped with their
    reasons (each as two arrays sorted by id), its counts; and an item per failed
    session."""
    insert_items(op, part)
    done, previous = _pairs(part.eligible_by_status)
    skipped, why = _pairs(part.skipped)
    table = connection.ops.quote_name(OperationChunk._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} {_CHUNK_COLUMNS} "
            f"SELECT %s, %s, %s, {_SORTED_PAIRS}, {_SORTED_PAIRS}, %s, %s, %s",
            [
                op.pk, first, last, done, done, previous, skipped, skipped, why,
                len(done), len(skipped), part.failed_count,
            ],
        )  # fmt: skip


def insert_sorted_chunk(
    op: BulkOperation, part: Partition, *, previous: list[str], first: str, last: str
) -> None:
    """``insert_chunk`` for a chunk that skipped nothing and whose ``part.eligible`` is
    already in id order as the database sorts it (a keyset read's), ``previous`` the
    status of each: the arrays are written as they are, not sorted again by the
    database (sorting 50,000 ids took most of an export chunk's write)."""
    insert_items(op, part)
    done = part.eligible
    table = connection.ops.quote_name(OperationChunk._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} {_CHUNK_COLUMNS} "
            "VALUES (%s, %s, %s, %s::text[], %s::text[], '{}', '{}', %s, 0, %s)",
            [
                op.pk, first, last, array_param(done), array_param(previous), len(done),
                part.failed_count,
            ],
        )  # fmt: skip


class LostClaim(Exception):
    """Another worker took the slice over (this one stalled past the stale threshold):
    the chunk in progress rolls back."""


def hold(piece: OperationSlice, *, worker: str) -> None:
    """In a chunk's transaction: lock the slice's row; raise LostClaim when it is no
    longer ``worker``'s."""
    held = OperationSlice.objects.select_for_update().filter(pk=piece.pk, claimed_by=worker)
    if not held.exists():
        raise LostClaim(f"slice {piece.number} of {piece.operation_id} was taken over")


# --- one slice's chunks -----------------------------------------------------------------------
class SliceChunks:
    """The chunks of one slice claimed by ``worker``, as the executor's loop runs them:
    ``cursor`` is where the slice stands (the loop passes it back as ``after``)."""

    def __init__(
        self, op: BulkOperation, act: BulkAction, source, piece: OperationSlice, *, worker: str
    ) -> None:
        self.op, self.act, self.source, self.slice = op, act, source, piece
        self.worker = worker
        self.cursor = piece.cursor or piece.after

    def __call__(
        self, *, size: int, after: str, now: datetime.datetime, skip_locked: bool
    ) -> Partition:
        """One chunk in the caller's transaction, holding the slice: act on the next
        sessions past ``after``, record their items and counters (``op`` reloaded with
        every worker's), move the slice's cursor and heartbeat."""
        hold(self.slice, worker=self.worker)
        batch = self.source.next_batch(after=after, through=self.slice.through, size=size)
        if batch.ids:
            part = apply_chunk(
                self.op, self.act, self.source.lock_scope, ids=batch.ids, now=now,
                skip_locked=skip_locked,
            )  # fmt: skip
            if self.source.drops_missing:
                part.failed.pop(reasons.NOT_FOUND, None)
        else:
            part = Partition()
        return self.record(part, batch, now)

    def insert_chunk(self, part: Partition, *, first: str, last: str) -> None:
        """Write what the chunk over ``first`` … ``last`` did (``insert_chunk``)."""
        insert_chunk(self.op, part, first=first, last=last)

    def record(self, part: Partition, batch: Batch, now: datetime.datetime) -> Partition:
        """The chunk's items, the counters and the slice's cursor and heartbeat; return
        ``part`` marked with where the slice now stands."""
        part.last, part.last_id = batch.last, batch.cursor
        if part.processed:
            self.insert_chunk(part, first=batch.ids[0], last=batch.ids[-1])
        record_shared(self.op, part, now)
        OperationSlice.objects.filter(pk=self.slice.pk).update(
            cursor=batch.cursor, done=batch.last, heartbeat_at=now
        )
        return part


def record_shared(op: BulkOperation, part: Partition, now: datetime.datetime) -> None:
    """Add a chunk to the counters that every worker of ``op`` adds to (``total`` at
    least ``processed``), and load the row as it then is into ``op``."""
    n = part.processed
    update_and_reload(
        op,
        processed=F("processed") + n,
        succeeded=F("succeeded") + len(part.eligible),
        skipped=F("skipped") + part.skipped_count,
        failed=F("failed") + part.failed_count,
        total=Greatest(F("total"), F("processed") + n),
        version=F("version") + 1,
        heartbeat_at=now,
    )


def large_finished(op: BulkOperation) -> None:
    """Every slice is done: ``total`` becomes the number of sessions the run acted on
    (it was the count at creation; sessions may have stopped or started matching)."""
    BulkOperation.objects.filter(pk=op.pk, status=OperationStatus.RUNNING).update(
        total=F("processed")
    )
    op.total = op.processed


def large_restart(op: BulkOperation) -> None:
    """A read-only large operation (export) resumed after a crash starts over: its
    items and chunks go and its slices walk again from their start."""
    BulkOperationItem.objects.filter(operation=op).delete()
    OperationChunk.objects.filter(operation=op).delete()
    OperationSlice.objects.filter(operation=op).update(cursor="", done=False)
