"""Crash safety: the reaper resumes operations whose worker is gone, and a
worker that shuts down gracefully hands its operation to the next one."""

from __future__ import annotations

import datetime
import logging

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from bulkops.conf import bulkops_settings
from bulkops.engine.large.workers import is_live
from bulkops.engine.queue import enqueue_operation, mark_lost, task_alive
from bulkops.models import BulkOperation, OperationStatus

logger = logging.getLogger("bulkops.engine")


def _stale(threshold: datetime.datetime) -> Q:
    quiet = Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=threshold)
    return (
        Q(status=OperationStatus.RUNNING)
        | Q(status=OperationStatus.PENDING, created_at__lt=threshold)
    ) & quiet


def _reap_one(operation_id: str, *, threshold, now, seconds: float) -> bool:
    """Enqueue one candidate again if it is still stale and no task of it is alive."""
    with transaction.atomic():
        # A live worker holds this lock for the whole of each chunk: skip, not wait.
        op = (
            BulkOperation.objects.select_for_update(skip_locked=True)
            .filter(_stale(threshold), pk=operation_id)
            .first()
        )
        if op is None or task_alive(op.pk, claimed_since=threshold):
            return False
        lost = mark_lost(
            op.pk,
            now=now,
            note=f"The worker stopped beating for over {seconds:g} s; "
            "the operation was enqueued again by the reaper.",
        )
        BulkOperation.objects.filter(pk=op.pk).update(heartbeat_at=now)
        enqueue_operation(op.pk)
    logger.warning(
        "operation %s (%s, attempt %d, %d task rows lost) enqueued again by the reaper",
        op.pk,
        op.status,
        op.attempts,
        lost,
    )
    return True


def operation_reap_stale(
    *, stale_after: float | None = None, now: datetime.datetime | None = None
) -> list[str]:
    """Enqueue the task again for every operation whose worker is gone; return their ids.

    Gone means: ``running`` with a heartbeat (bumped by every chunk) older than
    ``stale_after`` seconds (default ``BULKOPS_STALE_AFTER_SECONDS``), or ``pending``
    for that long while no task row is queued for it (the task failed or was removed
    before the operation started). An operation whose task is still queued, or was
    claimed within the window, is left alone; task rows a dead worker left ``RUNNING``
    are marked failed. The resumed run processes only pending items and counts the
    attempt, so an operation that keeps killing its workers fails after
    ``BULKOPS_MAX_ATTEMPTS``. Safe to run from many workers at once: each operation is
    claimed under its row lock and its heartbeat is bumped when enqueued.
    """
    now = now or timezone.now()
    seconds = bulkops_settings.STALE_AFTER_SECONDS if stale_after is None else stale_after
    threshold = now - datetime.timedelta(seconds=seconds)
    candidates = (
        BulkOperation.objects.filter(_stale(threshold))
        .order_by("created_at")
        .values_list("pk", flat=True)
    )
    return [
        operation_id
        for operation_id in list(candidates)
        if _reap_one(operation_id, threshold=threshold, now=now, seconds=seconds)
    ]


def operation_hand_off(*, operation_id: str) -> bool:
    """After a graceful worker shutdown stopped the operation between chunks (SIGTERM),
    enqueue it again at once so another worker resumes it; the attempt is given back, as
    nothing crashed. Return False when the operation is not running (e.g. finished)."""
    with transaction.atomic():
        op = (
            BulkOperation.objects.select_for_update()
            .filter(pk=operation_id, status=OperationStatus.RUNNING)
            .first()
        )
        if op is None:
            return False
        # A large operation's other workers may still run it: then it lost no attempt.
        given_back = 0 if op.is_large and is_live(op) else 1
        BulkOperation.objects.filter(pk=op.pk).update(
            attempts=max(op.attempts - given_back, 0), heartbeat_at=timezone.now()
        )
        enqueue_operation(op.pk)
    logger.info("operation %s handed off to the next worker", operation_id)
    return True
