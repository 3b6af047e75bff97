"""Pause and resume: a running operation stops at its next chunk boundary
and releases its worker; resuming enqueues it again, and only its pending items run.

States: ``pending`` or ``running`` → (pause) → ``paused`` → (resume) → ``pending`` →
``running`` … A pending operation is paused at once (no worker holds it; its queued
task finds it paused and returns). A running one gets ``pause_requested``: the worker
finishes the chunk in progress, then sets ``paused`` (``stopping.conclude``). Time
spent paused (``paused_seconds``) does not count toward
``BULKOPS_OPERATION_TIMEOUT_SECONDS``, and a paused operation is never reaped (the
reaper only looks at pending and running ones). Cancelling a paused operation cancels
its remaining items at once (``operation_cancel``).
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from bulkops import events
from bulkops.engine.queue import enqueue_operation, task_alive
from bulkops.exceptions import OperationConflict
from bulkops.models import BulkOperation, OperationStatus


def paused_time(op: BulkOperation, now) -> float:
    """Seconds the current pause lasted, as far as the timeout is concerned: since
    ``paused_at``, once the operation had started (before that nothing ran)."""
    if not (op.paused_at and op.started_at):
        return 0.0
    return (now - op.paused_at).total_seconds()


def _pause_conflict(op: BulkOperation) -> str | None:
    """Why ``op`` cannot be paused now, or None."""
    if op.is_finished:
        return f"The operation has already finished ({op.status}); there is nothing to pause."
    if op.status == OperationStatus.PAUSED:
        return "The operation is already paused; resume it with POST …/resume."
    if op.cancel_requested:
        return "The operation is being cancelled; it cannot be paused."
    if op.status == OperationStatus.RUNNING and op.params.get("atomic"):
        return (
            "An all-or-nothing (atomic) operation runs in one transaction and cannot be "
            "paused while it runs; cancel it instead."
        )
    return None


def operation_pause(*, operation: BulkOperation) -> BulkOperation:
    """Pause ``operation``: a pending one at once (status ``paused``), a running one at
    its next chunk boundary (``pause_requested`` until the worker stops; asking again
    meanwhile changes nothing). Return the fresh operation; raise OperationConflict when
    it is finished, already paused, being cancelled, or an atomic one already running."""
    with transaction.atomic():
        op = BulkOperation.objects.select_for_update(no_key=True).get(pk=operation.pk)
        problem = _pause_conflict(op)
        if problem:
            raise OperationConflict(problem)
        now = timezone.now()
        if op.status == OperationStatus.PENDING:
            BulkOperation.objects.filter(pk=op.pk).update(
                status=OperationStatus.PAUSED, paused_at=now, version=F("version") + 1
            )
        elif not op.pause_requested:
            BulkOperation.objects.filter(pk=op.pk).update(
                pause_requested=True, version=F("version") + 1
            )
        op.refresh_from_db()
        if op.status == OperationStatus.PAUSED:
            transaction.on_commit(lambda: events.publish_operation(op, "bulk_operation_paused"))
    return op


def operation_resume(*, operation: BulkOperation) -> BulkOperation:
    """Resume a paused operation: it becomes ``pending`` and its task is enqueued again
    (unless one is still queued); the time it spent paused is added to
    ``paused_seconds`` (once it had started: that time does not count toward the
    timeout). Return the fresh operation; raise OperationConflict unless it is paused."""
    with transaction.atomic():
        op = BulkOperation.objects.select_for_update(no_key=True).get(pk=operation.pk)
        if op.status != OperationStatus.PAUSED:
            detail = " (a pause was asked for; it stops at its next chunk boundary)"
            raise OperationConflict(
                f"Only a paused operation can be resumed; this one is {op.status}"
                f"{detail if op.pause_requested else ''}."
            )
        now = timezone.now()
        BulkOperation.objects.filter(pk=op.pk).update(
            status=OperationStatus.PENDING,
            pause_requested=False,
            paused_at=None,
            paused_seconds=F("paused_seconds") + paused_time(op, now),
            heartbeat_at=now,
            version=F("version") + 1,
        )
        if not task_alive(op.pk, claimed_since=now):
            # A large operation's unfinished slices run at once again.
            slices = op.slices.filter(done=False).count() if op.is_large else 1
            enqueue_operation(op.pk, tasks=slices)
        op.refresh_from_db()
        transaction.on_commit(lambda: events.publish_operation(op, "bulk_operation_resumed"))
    return op
