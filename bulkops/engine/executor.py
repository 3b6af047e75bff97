"""``operation_execute``: run an operation's pending items in chunks.

A run claims the operation (``_start``), then takes chunks until none is left or a
stop is asked for. A plain operation's chunk is one transaction that locks the
operation's row, asks whether to stop (``engine.stopping``), runs the chunk
(``engine.chunks``: lock, re-check, apply) and records its outcomes and counters;
events go out after it commits. An all-or-nothing operation's chunks share one
transaction (``engine.atomic``). Chunks are time-boxed (``ChunkSizer``). Only
``pending`` items are processed, so running this again — after a crash, or twice at
once — never applies an item twice.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Protocol

from django.db import InterfaceError, OperationalError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from bulkops import events
from bulkops.actions import get_action, reasons
from bulkops.actions.base import BulkAction
from bulkops.conf import bulkops_settings
from bulkops.engine.atomic import execute_atomic
from bulkops.engine.chunks import ChunkSizer, in_chunk_transaction, rate_key, run_chunk
from bulkops.engine.eligibility import Partition
from bulkops.engine.large.pacing import BackOff, Throttle
from bulkops.engine.large.run import large_restart
from bulkops.engine.large.workers import execute_large, joins_run, large_conclude, worker_token
from bulkops.engine.outcomes import fail_rest, record
from bulkops.engine.stopping import (
    STOP_FIELDS,
    Stop,
    abort_quietly,
    conclude,
    over_threshold,
    stop_reason,
)
from bulkops.exceptions import BulkOpsError
from bulkops.models import (
    FINISHED_OPERATION_STATUSES,
    BulkOperation,
    BulkOperationItem,
    ItemOutcome,
    OperationStatus,
    Session,
)
from bulkops.selectors import sessions_in_scope_by_id

logger = logging.getLogger("bulkops.engine")


class Publisher:
    """Publishes after each committed chunk, coalescing progress to ~10 events/s."""

    MIN_INTERVAL = 0.1

    def __init__(self, op: BulkOperation, act: BulkAction) -> None:
        self.op = op
        self.act = act
        self.last = float("-inf")  # the first chunk always reports

    def chunk(self, part: Partition) -> None:
        if part.eligible:
            events.publish_sessions_updated(self.op, part.eligible, str(self.act.result_status))
        if part.last:
            # The final event follows at once with the same counters (progress is
            # coalesced, the final event never dropped).
            return
        now = time.monotonic()
        if now - self.last >= self.MIN_INTERVAL:
            self.last = now
            # No reload: ``record`` keeps the counters of ``op`` as it wrote them.
            events.publish_operation(self.op, "bulk_operation_progress")


FINAL_EVENTS = {
    OperationStatus.COMPLETED: "bulk_operation_completed",
    OperationStatus.PARTIAL: "bulk_operation_completed",
    OperationStatus.FAILED: "bulk_operation_failed",
    OperationStatus.CANCELLED: "bulk_operation_cancelled",
    OperationStatus.PAUSED: "bulk_operation_paused",
}


# --- start ----------------------------------------------------------------------------------
def _give_up(op: BulkOperation) -> None:
    fail_rest(
        op,
        error=f"Gave up after {op.attempts} attempts: the worker running it "
        "stopped without finishing each time.",
    )
    transaction.on_commit(lambda: events.publish_operation(op, "bulk_operation_failed"))


def _start(operation_id: str) -> tuple[BulkOperation, bool] | None:
    """Claim the operation for this execution; return (op, first_attempt) or None when
    there is nothing to do (finished) or it crashed too often (then it is failed)."""
    with transaction.atomic():
        op = (
            BulkOperation.objects.select_for_update(of=("self",))
            .select_related("user")
            .filter(pk=operation_id)
            .first()
        )
        if op is None or op.is_finished or op.status == OperationStatus.PAUSED:
            # A paused operation waits for operation_resume, which enqueues it again.
            return None
        joining = joins_run(op)
        if op.attempts >= bulkops_settings.MAX_ATTEMPTS and not joining:
            _give_up(op)
            return None
        # The first execution ever: not after a crash, a hand-off or a pause (those give
        # the attempt back, but the operation has started already).
        first = op.started_at is None
        if get_action(op.action).read_only and not first and not joining:
            # A read-only action (export) keeps nothing between attempts: start over.
            if op.is_large:
                large_restart(op)
            else:
                BulkOperationItem.objects.filter(operation=op).update(
                    outcome=ItemOutcome.PENDING, reason="", message=""
                )
            counters = dict.fromkeys(
                ("processed", "succeeded", "skipped", "failed", "cancelled"), 0
            )
            BulkOperation.objects.filter(pk=op.pk).update(**counters)
            vars(op).update(counters)
        now = timezone.now()
        started = {
            "status": OperationStatus.RUNNING,
            "attempts": op.attempts + (0 if joining else 1),
            "started_at": op.started_at or now,
            "heartbeat_at": now,
            "version": op.version + 1,
        }
        # The row is locked: what is written is what it holds (no reload).
        BulkOperation.objects.filter(pk=op.pk).update(**started)
        vars(op).update(started)
    return op, first


# --- a plain operation: each chunk its own transaction ----------------------------------------
class ChunkStep(Protocol):
    """One chunk's work in the caller's transaction: act on the next sessions past
    ``after`` and record them; return their partition, or None when none is left."""

    def __call__(
        self, *, size: int, after: str, now: datetime.datetime, skip_locked: bool
    ) -> Partition | None: ...


class _PendingItems:
    """A plain operation's chunks: its pending items in id order, recorded in place."""

    def __init__(self, op: BulkOperation, act: BulkAction, scope: QuerySet[Session]) -> None:
        self.op, self.act, self.scope = op, act, scope

    def __call__(
        self, *, size: int, after: str, now: datetime.datetime, skip_locked: bool
    ) -> Partition | None:
        part = run_chunk(
            self.op, self.act, self.scope, size=size, now=now, after=after,
            skip_locked=skip_locked,
        )  # fmt: skip
        if part is not None:
            record(self.op, part, now)
        return part


def _chunk(
    op: BulkOperation,
    should_stop: Callable[[], bool] | None,
    step: ChunkStep,
    *,
    size: int,
    after: str,
    skip_locked: bool,
    lock: bool = True,
) -> Partition | Stop | None:
    """One chunk in the caller's transaction, under the operation's row lock: the stop
    check on the row as locked, then the chunk and its record. None: nothing is left
    (or the operation was finished meanwhile). ``lock`` False (a large operation's
    slices, which run at once): the row is read, not locked."""
    rows = BulkOperation.objects.select_for_update() if lock else BulkOperation.objects
    fresh = rows.filter(pk=op.pk).values("status", *STOP_FIELDS).get()
    if fresh["status"] in FINISHED_OPERATION_STATUSES:
        return None
    stop = stop_reason(op, should_stop, fresh=fresh)
    if stop:
        return stop
    return step(size=size, after=after, now=timezone.now(), skip_locked=skip_locked)


def _execute_chunks(
    op: BulkOperation,
    publisher: Publisher,
    should_stop: Callable[[], bool] | None,
    step: ChunkStep,
    *,
    after: str = "",
    throttle: Throttle | None = None,
    backoff: BackOff | None = None,
    lock: bool = True,
    key: str | None = None,
) -> Stop | None:
    """Chunks of ``step`` past ``after`` until none is left or a stop is asked for,
    each sized to last about ``BULKOPS_CHUNK_SECONDS``. After the last chunk (one that
    read fewer items than it could hold) nothing is left to stop, bar the failure
    threshold, which the counters ``record`` keeps on ``op`` tell: a one-chunk
    operation costs no read between its chunk and its end. ``throttle``: chunks no
    larger than its rate allows, and its wait after each (outside the transaction).
    ``backoff``: a wait and smaller chunks after a chunk that slowed down sharply or met
    locked rows. ``key``: the rate the first chunk is sized from (``chunks.rate_key``)."""
    sizer = ChunkSizer(maximum=throttle.max_chunk if throttle else None, key=key)
    while True:
        started = time.monotonic()
        size = backoff.size(sizer.size) if backoff is not None else sizer.size
        chunk = partial(_chunk, op, should_stop, step, size=size, after=after, lock=lock)
        result = in_chunk_transaction(op, lambda skip, chunk=chunk: chunk(skip_locked=skip))
        if result is None or isinstance(result, Stop):
            return result
        publisher.chunk(result)
        if result.last:
            return Stop.FAILURE_THRESHOLD if over_threshold(op, op.failed) else None
        after = result.last_id
        seconds = time.monotonic() - started
        sizer.measured(items=result.processed, seconds=seconds)
        if throttle is not None:
            throttle.wait(result.processed)
        if backoff is not None:
            locked = reasons.LOCKED in result.failed
            backoff.measured(rows=result.processed, seconds=seconds, locked=locked)
        logger.debug(
            "operation %s: %d items in %.3f s, next chunk %d",
            op.pk,
            result.processed,
            seconds,
            sizer.size,
        )


def _execute_large(
    op: BulkOperation,
    act: BulkAction,
    scope: QuerySet[Session],
    should_stop: Callable[[], bool] | None,
) -> Stop | bool:
    """This worker's share of a large operation (``engine.large.workers``): slices
    until none is free or a stop; then, when it is the last worker on it, the
    operation's end. Return True when this worker ended it (``op`` is the row as it
    ended), False when another one does, ``Stop.SHUTDOWN`` when it was left to resume."""
    worker = worker_token()
    publisher = Publisher(op, act)
    # Slices write one chunk row, not an item per session: a rate of their own.
    key = f"{rate_key(act)}:large" if rate_key(act) else None

    def run_chunks(chunks, *, after: str, throttle: Throttle, backoff: BackOff) -> Stop | None:
        return _execute_chunks(
            op, publisher, should_stop, chunks, after=after, throttle=throttle, backoff=backoff,
            lock=False, key=key,
        )  # fmt: skip

    stop = execute_large(op, act, scope, worker=worker, run_chunks=run_chunks)
    if stop is Stop.SHUTDOWN:
        return stop
    return large_conclude(op, act, stop, worker=worker)


# --- finishing --------------------------------------------------------------------------------
def _cause(exc: Exception) -> str:
    """The fatal error as the operation's ``error`` says it: a hook's own words (a
    ``BulkOpsError``), else the exception's type and message."""
    if isinstance(exc, BulkOpsError):
        return exc.message
    return f"Internal error ({type(exc).__name__}: {str(exc)[:300]})"


def _fail(op: BulkOperation, act: BulkAction, exc: Exception) -> None:
    """A fatal error: chunks already committed stay; the rest fail ``internal_error``
    and the operation fails at once with the cause."""
    logger.exception("operation %s stopped on an internal error", op.pk)
    abort_quietly(act, op)
    with transaction.atomic():
        fail_rest(
            op,
            error=f"{_cause(exc)}; sessions already processed keep their outcome, "
            "the rest were not touched.",
        )


def operation_execute(
    *, operation_id: str, should_stop: Callable[[], bool] | None = None
) -> BulkOperation | None:
    """Run the operation's pending items in chunks until done, cancelled or timed out.

    Each chunk is one transaction (all chunks one transaction when ``atomic``), sized
    to last about ``BULKOPS_CHUNK_SECONDS``. ``should_stop`` is asked between chunks
    (a worker shutting down): when it answers True the operation is left ``running``
    for the next worker to resume. Return the operation, or None if it does not exist.
    """
    started = _start(operation_id)
    if started is None:
        return BulkOperation.objects.filter(pk=operation_id).first()
    op, first = started
    if first:
        events.publish_operation(op, "bulk_operation_started")
    act = get_action(op.action)(user=op.user, params=op.params)
    scope = sessions_in_scope_by_id(user=op.user, action=act)
    try:
        if op.is_large:
            ended = _execute_large(op, act, scope, should_stop)
            if ended is not True:
                if ended is Stop.SHUTDOWN:
                    logger.info("operation %s: slice left to resume after shutdown", op.pk)
                return op
        else:
            act.begin(op)
            if act.atomic:
                stop = execute_atomic(op, act, scope, should_stop)
            else:
                steps = _PendingItems(op, act, scope)
                stop = _execute_chunks(
                    op, Publisher(op, act), should_stop, steps, key=rate_key(act)
                )
            if stop is Stop.SHUTDOWN:
                logger.info("operation %s left to resume after worker shutdown", op.pk)
                return op
            conclude(op, act, stop)
    except (OperationalError, InterfaceError):
        # The connection failed (restart, killed backend, failover): the chunk in
        # progress rolled back, committed ones stand. Leave the operation running: the
        # reaper resumes it from its pending items (counting the attempt).
        logger.warning("operation %s: database connection lost; left to resume", op.pk)
        raise
    except Exception as exc:
        _fail(op, act, exc)
    # Every way to here reloaded ``op`` as it committed it (``finalise``, ``record_paused``).
    events.publish_operation(op, FINAL_EVENTS[op.status])
    return op
