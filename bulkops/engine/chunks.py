"""One chunk of an operation: its next pending items, their sessions
locked and re-checked, the action applied set-based, the items' outcomes written —
and how many items the next chunk takes, so that a chunk lasts about
``BULKOPS_CHUNK_SECONDS`` whatever one item costs.

The caller owns the transaction and the operation's counters: a chunk of a plain
operation commits on its own with its counters, an all-or-nothing operation's chunks
are savepoints of one transaction (``engine.atomic``).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from bulkops.actions.base import BulkAction
from bulkops.actions.sql import AnyOf, is_postgresql
from bulkops.conf import bulkops_settings
from bulkops.engine.chunksql import lock_check_apply, sql_plan
from bulkops.engine.eligibility import Partition, partition, partition_applied, session_rows
from bulkops.models import BulkOperation, BulkOperationItem, ItemOutcome, Session

logger = logging.getLogger("bulkops.engine")

T = TypeVar("T")

#: PostgreSQL's SQLSTATE for "lock not available" (lock_timeout expired).
LOCK_NOT_AVAILABLE = "55P03"
#: The most items the first chunk of a run takes: few, so that the first progress
#: comes soon even when an item is costly (an archive of 150 KB sessions does ~100 a
#: second), and the rate the next chunks are sized from is measured early. Cheap
#: items reach BULKOPS_CHUNK_SIZE (5,000) by the sixth chunk.
FIRST_CHUNK = 20
#: A chunk takes at most this many times the items of the one before: a rate measured
#: on a few cheap items (all not found, say) must not size a chunk of costly ones.
MAX_GROWTH = 4
#: The fewest items a chunk must have done for its rate to be remembered: a smaller
#: chunk's rate is mostly its fixed costs (an inline run's is), which would make the
#: next run start smaller than it need.
REMEMBER_MIN_ITEMS = 100

#: Items per second the last sizeable chunk of each steady-cost action ran at in this
#: process (``rate_key``): a worker runs many operations, and the next one of the same
#: action starts at the size that fits the target instead of growing to it again.
_remembered_rates: dict[str, float] = {}


def rate_key(act: BulkAction) -> str | None:
    """The name a run of ``act`` remembers its rate under, when one item costs about
    the same whatever the session holds: an action that runs as one SQL ``UPDATE``
    (``sql_apply``: close, soft delete, restore). None otherwise (an archive copies
    each session's content, a hard delete removes what hangs off it): such a run
    always starts at ``FIRST_CHUNK``, since an earlier run's sessions may have been
    far cheaper than this one's."""
    return act.action_type if act.sql_apply(now=timezone.now()) is not None else None


def forget_rates() -> None:
    """Forget every remembered rate (tests start from the same first chunk)."""
    _remembered_rates.clear()


class ChunkSizer:
    """How many items the next chunk of a run takes: so many that it lasts about
    ``BULKOPS_CHUNK_SECONDS`` at the rate the last chunks were measured at (growing
    at most ``MAX_GROWTH``-fold a chunk, shrinking at once), the first at most
    ``FIRST_CHUNK``, none more than ``BULKOPS_CHUNK_SIZE``. So progress moves, and a
    pause or cancel is seen, about once per target duration whatever an item costs.
    With ``BULKOPS_CHUNK_SECONDS`` 0 every chunk takes ``BULKOPS_CHUNK_SIZE`` items.
    ``maximum``: a lower bound than ``BULKOPS_CHUNK_SIZE`` (a throttled run's).
    ``key`` (``rate_key``): the first chunk fits the target at the rate this process
    last measured under that key (never fewer than ``FIRST_CHUNK`` items), and the
    run's sizeable chunks update it."""

    def __init__(self, *, maximum: int | None = None, key: str | None = None) -> None:
        largest = int(bulkops_settings.CHUNK_SIZE)
        self.maximum = max(1, min(largest, maximum) if maximum else largest)
        self.target = float(bulkops_settings.CHUNK_SECONDS)
        self.key = key
        self._last_rate = _remembered_rates.get(key) if key else None
        first = FIRST_CHUNK
        if self._last_rate is not None:
            first = max(FIRST_CHUNK, int(self._last_rate * self.target))
        self.size = min(first, self.maximum) if self.target > 0 else self.maximum

    def measured(self, *, items: int, seconds: float) -> None:
        """The last chunk did ``items`` in ``seconds`` (from its start to its events).
        The next one is sized from the slower of the last two chunks' rates: one
        quick chunk (cheap items, an idle moment) must not make the next one long."""
        if self.target <= 0 or items <= 0:
            return
        rate = items / max(seconds, 1e-6)
        if self.key and items >= REMEMBER_MIN_ITEMS:
            _remembered_rates[self.key] = rate
        slower = rate if self._last_rate is None else min(rate, self._last_rate)
        self._last_rate = rate
        fitting = int(slower * self.target)
        self.size = max(1, min(fitting, self.size * MAX_GROWTH, self.maximum))


def next_ids(
    op: BulkOperation, *, size: int, after: str = "", configure: bool = False
) -> list[str]:
    """The next ``size`` pending items of ``op`` in id order, past ``after`` (the last
    id of this run's previous chunk: every item up to it has its outcome, so the scan
    of the operation's items starts there instead of passing them again).

    ``configure`` (PostgreSQL): the same statement sets the chunk's transaction up as
    ``_lock_timeout`` does (the lock timeout, the commit without the WAL flush): one
    round trip fewer per chunk (also when none is pending: harmless)."""
    items = BulkOperationItem.objects.filter(operation=op, outcome=ItemOutcome.PENDING)
    if after:
        items = items.filter(session_id__gt=after)
    ids = items.order_by("session_id").values_list("session_id", flat=True)[:size]
    if not (configure and is_postgresql()):
        return list(ids)
    sql, params = ids.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT ARRAY({sql}), {_CHUNK_SETTINGS}",
            [*params, _timeout(bulkops_settings.LOCK_TIMEOUT)],
        )
        return list(cursor.fetchone()[0])


#: A chunk's transaction settings (``_lock_timeout``), as a select list.
_CHUNK_SETTINGS = (
    "set_config('lock_timeout', %s, true), set_config('synchronous_commit', 'off', true)"
)


def _timeout(seconds: float | None) -> str:
    return f"{int((seconds or 0) * 1000)}ms"


def _lock_timeout(seconds: float | None, *, chunk: bool = False) -> None:
    """``SET LOCAL lock_timeout`` (PostgreSQL; 0 or None: wait as long as it takes).

    ``chunk``: the same round trip also turns off ``synchronous_commit`` for the
    chunk's transaction. A chunk's commit is a checkpoint, not a promise to anyone: if
    PostgreSQL itself crashes, the chunk's session changes, item outcomes and counters
    are lost together (one transaction) and the resumed run does them again. So it need
    not wait for the WAL flush. The final commit (finalise) does wait, and flushing it
    flushes every earlier chunk too (WAL is written in order)."""
    if is_postgresql():
        settings = _CHUNK_SETTINGS if chunk else "set_config('lock_timeout', %s, true)"
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {settings}", [_timeout(seconds)])


def _held_by_others(scope: QuerySet[Session], ids: list[str], rows: dict) -> set[str]:
    """The ids a SKIP LOCKED read left out that do exist: another transaction holds them."""
    missing = [sid for sid in ids if sid not in rows]
    return (
        set(scope.filter(AnyOf("pk", missing)).values_list("pk", flat=True)) if missing else set()
    )


def _apply_in_sql(act, plan, scope, ids, skip_locked) -> Partition:
    """Lock, check and apply in one statement (``engine.chunksql``); ``check`` sorts
    only the ids it did not apply."""
    applied, rest = lock_check_apply(plan=plan, scope=scope, ids=ids, skip_locked=skip_locked)
    # No lock_timeout reset: what follows in this transaction touches only the
    # operation's own row (locked already) and its items, which nothing else writes.
    held: set[str] = set()
    if skip_locked:
        found = {**rest, **{sid: None for sids in applied.values() for sid in sids}}
        held = _held_by_others(scope, ids, found)
    return partition_applied(action=act, ids=ids, applied=applied, rest=rest, held=held)


def _apply_in_python(op, act, scope, ids, skip_locked, now) -> Partition:
    """Lock and read the rows, sort them with ``check``, then ``apply`` the eligible."""
    rows = session_rows(action=act, scope=scope, ids=ids, lock=True, skip_locked=skip_locked)
    _lock_timeout(None)
    held = _held_by_others(scope, ids, rows) if skip_locked else set()
    part = partition(action=act, ids=ids, rows=rows, held=held)
    act.apply_rows(rows=[rows[sid] for sid in part.eligible], operation=op, now=now)
    return part


def run_chunk(
    op: BulkOperation,
    act: BulkAction,
    scope: QuerySet[Session],
    *,
    size: int,
    now: datetime.datetime,
    after: str = "",
    skip_locked: bool = False,
) -> Partition | None:
    """One chunk of at most ``size`` items in the caller's transaction: lock their
    sessions (waiting at most ``BULKOPS_LOCK_TIMEOUT``; ``skip_locked``: the rows
    another transaction holds fail ``locked``), re-check and apply (stamped ``now``).
    Return the partition (the caller records it), or None when no item is pending past
    ``after``."""
    ids = next_ids(op, size=size, after=after, configure=True)
    if not ids:
        return None
    part = apply_chunk(op, act, scope, ids=ids, now=now, skip_locked=skip_locked, configured=True)
    part.last = len(ids) < size
    part.last_id = ids[-1]
    return part


def apply_chunk(
    op: BulkOperation,
    act: BulkAction,
    scope: QuerySet[Session],
    *,
    ids: list[str],
    now: datetime.datetime,
    skip_locked: bool = False,
    checkpoint: bool = True,
    configured: bool = False,
) -> Partition:
    """Lock the sessions of ``ids`` that are in ``scope``, re-check them and apply the
    action to the eligible, in the caller's transaction; return their partition (an id
    ``scope`` does not hold is ``not_found``, or ``locked`` when another transaction
    holds it and ``skip_locked``). ``checkpoint``: the transaction commits without
    waiting for the WAL flush (``_lock_timeout``); False when its commit answers a
    request (an inline run). ``configured``: ``next_ids(configure=True)`` set the
    transaction up already."""
    plan = sql_plan(act, now)
    if not configured:
        _lock_timeout(bulkops_settings.LOCK_TIMEOUT, chunk=checkpoint)
    if plan is not None:
        return _apply_in_sql(act, plan, scope, ids, skip_locked)
    return _apply_in_python(op, act, scope, ids, skip_locked, now)


def _is_lock_timeout(exc: OperationalError) -> bool:
    return getattr(getattr(exc, "__cause__", None), "sqlstate", None) == LOCK_NOT_AVAILABLE


def in_chunk_transaction(op: BulkOperation, body: Callable[[bool], T]) -> T:
    """``body(skip_locked)`` in a transaction (a savepoint inside an all-or-nothing
    operation's), and again with ``skip_locked`` when a session row stayed locked past
    ``BULKOPS_LOCK_TIMEOUT``: the rows others hold then fail ``locked``, the rest go on."""
    try:
        with transaction.atomic():
            return body(False)
    except OperationalError as exc:
        if not _is_lock_timeout(exc):
            raise
    logger.warning("operation %s: rows locked past the lock timeout fail 'locked'", op.pk)
    with transaction.atomic():
        return body(True)
