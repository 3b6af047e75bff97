"""``operation_execute``: run an operation's pending items in chunks (DESIGN §7).

Each chunk is one transaction that locks the operation row, re-checks eligibility
under row locks, applies the action set-based and records outcomes per group; events
go out after it commits. Only ``pending`` items are processed, so running this again —
after a crash, or twice at once — never applies an item twice.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from bulkops import events
from bulkops.actions import get_action, reasons
from bulkops.actions.base import BulkAction
from bulkops.actions.sql import AnyOf, is_postgresql
from bulkops.conf import bulkops_settings
from bulkops.engine.chunksql import lock_check_apply, sql_plan
from bulkops.engine.eligibility import Partition, partition, partition_applied, session_rows
from bulkops.engine.outcomes import (
    close_remaining,
    fail_rest,
    finalise,
    record,
    record_atomic_rollback,
    record_paused,
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
from bulkops.selectors import sessions_in_scope

logger = logging.getLogger("bulkops.engine")

#: PostgreSQL's SQLSTATE for "lock not available" (lock_timeout expired).
LOCK_NOT_AVAILABLE = "55P03"
#: Why an execution stopped between chunks (None: it ran to the end).
CANCELLED, TIMEOUT, SHUTDOWN, ROLLED_BACK = "cancelled", "timeout", "shutdown", "rolled_back"
PAUSED, FAILURE_THRESHOLD = "paused", "failure_threshold"


class AtomicRollback(Exception):
    """Raised inside an all-or-nothing operation to undo every chunk."""

    def __init__(self, failures: dict[str, list[str]]) -> None:
        super().__init__("atomic operation rolled back")
        self.failures = failures


# --- one chunk ----------------------------------------------------------------------------
def _next_chunk(op: BulkOperation) -> list[str]:
    return list(
        BulkOperationItem.objects.filter(operation=op, outcome=ItemOutcome.PENDING)
        .order_by("session_id")
        .values_list("session_id", flat=True)[: bulkops_settings.CHUNK_SIZE]
    )


def _lock_timeout(seconds: float | None, *, chunk: bool = False) -> None:
    """``SET LOCAL lock_timeout`` (PostgreSQL; 0 or None: wait as long as it takes).

    ``chunk``: the same round trip also turns off ``synchronous_commit`` for the
    chunk's transaction. A chunk's commit is a checkpoint, not a promise to anyone: if
    PostgreSQL itself crashes, the chunk's session changes, item outcomes and counters
    are lost together (one transaction) and the resumed run does them again. So it need
    not wait for the WAL flush. The final commit (finalise) does wait, and flushing it
    flushes every earlier chunk too (WAL is written in order)."""
    if is_postgresql():
        sync = ", set_config('synchronous_commit', 'off', true)" if chunk else ""
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT set_config('lock_timeout', %s, true){sync}",
                [f"{int((seconds or 0) * 1000)}ms"],
            )


def _held_by_others(scope: QuerySet[Session], ids: list[str], rows: dict) -> set[str]:
    """The ids a SKIP LOCKED read left out that do exist: another transaction holds them."""
    missing = [sid for sid in ids if sid not in rows]
    return (
        set(scope.filter(AnyOf("pk", missing)).values_list("pk", flat=True)) if missing else set()
    )


def _run_chunk(
    op: BulkOperation, act: BulkAction, scope: QuerySet[Session], *, skip_locked: bool = False
) -> Partition | None:
    """One chunk in the caller's transaction: lock, re-check, apply, record. Return None
    when there is nothing left (or the operation was finished meanwhile).

    The session rows are locked waiting at most ``BULKOPS_LOCK_TIMEOUT``; past it the
    database raises (``_is_lock_timeout``) and the caller runs the chunk again with
    ``skip_locked``: the rows others hold then fail ``locked``, the rest go on."""
    status = (
        BulkOperation.objects.select_for_update().values_list("status", flat=True).get(pk=op.pk)
    )
    if status in FINISHED_OPERATION_STATUSES:
        return None
    ids = _next_chunk(op)
    if not ids:
        return None
    now = timezone.now()
    plan = sql_plan(act, now)
    _lock_timeout(bulkops_settings.LOCK_TIMEOUT, chunk=True)
    if plan is not None:
        part = _apply_in_sql(op, act, plan, scope, ids, skip_locked)
    else:
        part = _apply_in_python(op, act, scope, ids, skip_locked, now)
    record(op, part, now)
    part.last = len(ids) < bulkops_settings.CHUNK_SIZE
    return part


def _apply_in_sql(op, act, plan, scope, ids, skip_locked) -> Partition:
    """Lock, check, apply and record the succeeded items in one statement
    (``engine.chunksql``); ``check`` sorts only the ids it did not apply."""
    applied, rest = lock_check_apply(
        plan=plan, scope=scope, ids=ids, operation_id=op.pk, skip_locked=skip_locked
    )
    # No lock_timeout reset: what follows in this transaction touches only the
    # operation's own row (locked already) and its items, which nothing else writes.
    held: set[str] = set()
    if skip_locked:
        found = {**rest, **{sid: None for sids in applied.values() for sid in sids}}
        held = _held_by_others(scope, ids, found)
    part = partition_applied(action=act, ids=ids, applied=applied, rest=rest, held=held)
    part.succeeded_recorded = True
    return part


def _apply_in_python(op, act, scope, ids, skip_locked, now) -> Partition:
    """Lock and read the rows, sort them with ``check``, then ``apply`` the eligible."""
    rows = session_rows(action=act, scope=scope, ids=ids, lock=True, skip_locked=skip_locked)
    _lock_timeout(None)
    held = _held_by_others(scope, ids, rows) if skip_locked else set()
    part = partition(action=act, ids=ids, rows=rows, held=held)
    act.apply(ids=part.eligible, operation=op, now=now)
    return part


class _Publisher:
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
            # The final event follows at once with the same counters (DESIGN §6:
            # progress is coalesced, the final event never dropped).
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


# --- start and stop -------------------------------------------------------------------------
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
        if op.attempts >= bulkops_settings.MAX_ATTEMPTS:
            _give_up(op)
            return None
        # The first execution ever: not after a crash, a hand-off or a pause (those give
        # the attempt back, but the operation has started already).
        first = op.started_at is None
        if get_action(op.action).read_only and not first:
            # A read-only action (export) keeps nothing between attempts: start over.
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
            "attempts": op.attempts + 1,
            "started_at": op.started_at or now,
            "heartbeat_at": now,
            "version": op.version + 1,
        }
        # The row is locked: what is written is what it holds (no reload).
        BulkOperation.objects.filter(pk=op.pk).update(**started)
        vars(op).update(started)
    return op, first


#: What ``_stop_reason`` reads of the operation's row.
STOP_FIELDS = ("cancel_requested", "pause_requested", "started_at", "paused_seconds", "failed")


def _stop_reason(
    op: BulkOperation, should_stop: Callable[[], bool] | None, *, fresh: dict | None = None
) -> str | None:
    """Between chunks: CANCELLED, FAILURE_THRESHOLD (more than ``max_failures`` items
    failed), PAUSED, TIMEOUT (time paused does not count), SHUTDOWN or None. ``fresh``:
    the row's flags as just read (else they are read now)."""
    if fresh is None:
        fresh = BulkOperation.objects.filter(pk=op.pk).values(*STOP_FIELDS).get()
    if fresh["cancel_requested"]:
        return CANCELLED
    if _over_threshold(op, fresh["failed"]):
        return FAILURE_THRESHOLD
    if fresh["pause_requested"]:
        return PAUSED
    limit = bulkops_settings.OPERATION_TIMEOUT_SECONDS
    if fresh["started_at"]:
        running = (timezone.now() - fresh["started_at"]).total_seconds() - fresh["paused_seconds"]
        if running > limit:
            return TIMEOUT
    if should_stop is not None and should_stop():
        return SHUTDOWN
    return None


def _over_threshold(op: BulkOperation, failed: int) -> bool:
    max_failures = op.params.get("max_failures")
    return max_failures is not None and failed > max_failures


# --- the two modes ----------------------------------------------------------------------------
def _is_lock_timeout(exc: OperationalError) -> bool:
    return getattr(getattr(exc, "__cause__", None), "sqlstate", None) == LOCK_NOT_AVAILABLE


def _chunk(op, act, scope) -> Partition | None:
    """One chunk in a transaction (a savepoint inside an atomic operation's); again
    with SKIP LOCKED when some row stayed locked past ``BULKOPS_LOCK_TIMEOUT``."""
    try:
        with transaction.atomic():
            return _run_chunk(op, act, scope)
    except OperationalError as exc:
        if not _is_lock_timeout(exc):
            raise
    logger.warning("operation %s: rows locked past the lock timeout fail 'locked'", op.pk)
    with transaction.atomic():
        return _run_chunk(op, act, scope, skip_locked=True)


def _execute_chunks(op, act, scope, publisher, should_stop) -> str | None:
    """Chunks until none is left or a stop is asked for. The first stop check uses the
    row as ``_start`` just read it under its lock; after the last chunk (one that read
    fewer items than a chunk holds) nothing is left to stop, bar the failure threshold,
    which the counters ``record`` keeps on ``op`` tell: a one-chunk operation costs no
    read between its chunk and its end."""
    fresh = {name: getattr(op, name) for name in STOP_FIELDS}
    while True:
        stop = _stop_reason(op, should_stop, fresh=fresh)
        fresh = None
        if stop:
            return stop
        part = _chunk(op, act, scope)
        if part is None:
            return None
        publisher.chunk(part)
        if part.last:
            return FAILURE_THRESHOLD if _over_threshold(op, op.failed) else None


def _execute_atomic(op, act, scope) -> str | None:
    """All chunks in one transaction; any failed item undoes every change."""
    failures: dict[str, list[str]] = defaultdict(list)
    try:
        with transaction.atomic():
            while (part := _chunk(op, act, scope)) is not None:
                for reason, ids in part.failed.items():
                    failures[reason].extend(ids)
                if part.last:
                    break
            if failures:
                raise AtomicRollback(failures)
    except AtomicRollback:
        with transaction.atomic():
            op.error = record_atomic_rollback(op, failures)
        return ROLLED_BACK
    return None


# --- finishing --------------------------------------------------------------------------------
def _abort_quietly(act: BulkAction, op: BulkOperation) -> None:
    """``act.abort`` must never keep an operation from ending: its failure is logged."""
    try:
        act.abort(op)
    except Exception:
        logger.exception("abort hook of %s failed", op.pk)


def _conclude(op: BulkOperation, act: BulkAction, stop: str | None) -> None:
    """Finish the operation the way the execution ended (in one transaction)."""
    with transaction.atomic():
        if stop in (CANCELLED, TIMEOUT):
            _abort_quietly(act, op)
            reason = reasons.CANCELLED if stop == CANCELLED else reasons.TIMEOUT
            close_remaining(op, outcome=ItemOutcome.CANCELLED, reason=reason)
            message = (
                "Cancelled on request."
                if stop == CANCELLED
                else f"timeout: stopped after {bulkops_settings.OPERATION_TIMEOUT_SECONDS} s."
            )
            finalise(op, status=OperationStatus.CANCELLED, error=message)
        elif stop == FAILURE_THRESHOLD:
            _abort_quietly(act, op)
            close_remaining(op, outcome=ItemOutcome.CANCELLED, reason=reasons.FAILURE_THRESHOLD)
            finalise(op, status=OperationStatus.FAILED, error=_threshold_error(op))
        elif stop == PAUSED:
            _abort_quietly(act, op)  # an export's partial file: it starts over on resume
            record_paused(op)
        elif stop == ROLLED_BACK:
            _abort_quietly(act, op)
            finalise(op, status=OperationStatus.FAILED, error=op.error)
        else:
            # Finished meanwhile (the reaper gave up on it)? Its status says; then the
            # row as it is. Else the action's last step, and one UPDATE … RETURNING.
            status = BulkOperation.objects.values_list("status", flat=True).get(pk=op.pk)
            if status in FINISHED_OPERATION_STATUSES:
                op.refresh_from_db()
            else:
                act.finish(op)
                finalise(op)


def _threshold_error(op: BulkOperation) -> str:
    op.refresh_from_db(fields=["failed"])
    return (
        f"Stopped at the failure threshold: {op.failed} sessions failed, more than "
        f"max_failures ({op.params['max_failures']}); the rest were not touched."
    )


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
    _abort_quietly(act, op)
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

    Each chunk is one transaction (all chunks one transaction when ``atomic``).
    ``should_stop`` is asked between chunks (a worker shutting down): when it answers
    True the operation is left ``running`` for the next worker to resume. Return the
    operation, or None if it does not exist.
    """
    started = _start(operation_id)
    if started is None:
        return BulkOperation.objects.filter(pk=operation_id).first()
    op, first = started
    if first:
        events.publish_operation(op, "bulk_operation_started")
    act = get_action(op.action)(user=op.user, params=op.params)
    scope = sessions_in_scope(user=op.user, action=act)
    try:
        act.begin(op)
        if act.atomic:
            stop = _execute_atomic(op, act, scope)
        else:
            stop = _execute_chunks(op, act, scope, _Publisher(op, act), should_stop)
        if stop == SHUTDOWN:
            logger.info("operation %s left to resume after worker shutdown", op.pk)
            return op
        _conclude(op, act, stop)
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
