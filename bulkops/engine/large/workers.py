"""How workers share a large operation: its slices run at once, one worker
per slice, and the last worker to stop ends the operation.

- **Slices.** At creation the selection is cut into ``BULKOPS_LARGE_SLICES`` ranges of
  the session id, at bounds PostgreSQL's statistics already hold (``pg_stats``'s
  histogram of the id: no row is read). An action that writes one file (export) gets
  one slice.
- **Claims.** Every task of the operation claims a slice that nobody holds — or whose
  holder stopped beating for ``BULKOPS_STALE_AFTER_SECONDS`` (a killed worker) — with
  ``FOR UPDATE SKIP LOCKED``; creating (and resuming) the operation enqueues one task
  per unfinished slice, and a task whose slice is done claims the next free one (so a
  reaped operation, enqueued once, runs its free slices one after the other). Each
  chunk locks its slice's row and checks the claim is still its own (a worker taken
  over while it stalled rolls its chunk back: ``LostClaim``), and moves the slice's
  cursor and heartbeat: every session exactly once.
- **Ending.** Chunks read the operation's row without locking it (a plain operation's
  chunk holds it): slices never wait for each other but at their counters' ``UPDATE``.
  A worker whose slices ran out, or that saw a cancel, pause, timeout or failure
  threshold, releases its claim; under the operation's row lock the last one holding a
  claim ends the operation (``large_conclude``), so the final event is sent once.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable

from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from bulkops.actions.base import BulkAction
from bulkops.conf import bulkops_settings
from bulkops.engine.large.export import chunks_for, large_file_action
from bulkops.engine.large.pacing import BackOff, Throttle
from bulkops.engine.large.run import LostClaim, large_finished, source_for
from bulkops.engine.stopping import STOP_FIELDS, Stop, conclude, stop_reason
from bulkops.models import (
    FINISHED_OPERATION_STATUSES,
    BulkOperation,
    OperationSlice,
    OperationStatus,
    Session,
)


def worker_token() -> str:
    return uuid.uuid4().hex


# --- slices at creation ----------------------------------------------------------------------
def slice_bounds(count: int) -> list[str]:
    """Up to ``count - 1`` session ids that cut the id space into ``count`` ranges of
    about as many sessions, from the table's statistics (none before an ANALYZE)."""
    if count <= 1:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT histogram_bounds::text::text[] FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = %s AND attname = 'id'",
            [Session._meta.db_table],
        )
        row = cursor.fetchone()
    bounds = list(row[0]) if row and row[0] else []
    if len(bounds) < count:
        return []
    step = len(bounds) / count
    return list(dict.fromkeys(bounds[round(step * i)] for i in range(1, count)))


def slices_create(op: BulkOperation, act: BulkAction) -> int:
    """Write ``op``'s slices; return how many."""
    count = 1 if act.produces_file else max(1, int(bulkops_settings.LARGE_SLICES))
    edges = ["", *slice_bounds(count), ""]
    OperationSlice.objects.bulk_create(
        OperationSlice(operation=op, number=n, after=edges[n], through=edges[n + 1])
        for n in range(len(edges) - 1)
    )
    return len(edges) - 1


# --- claims ----------------------------------------------------------------------------------
def _stale_before(now: datetime.datetime) -> datetime.datetime:
    return now - datetime.timedelta(seconds=bulkops_settings.STALE_AFTER_SECONDS)


def _claimable(op: BulkOperation, now: datetime.datetime) -> QuerySet[OperationSlice]:
    free = Q(claimed_by="") | Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=_stale_before(now))
    return OperationSlice.objects.filter(free, operation=op, done=False).order_by("number")


def joins_run(op: BulkOperation) -> bool:
    """Whether a task starting on ``op`` joins workers already running it (a large
    operation running with a fresh heartbeat): that is not another attempt, and
    nothing starts over."""
    return bool(
        op.is_large
        and op.status == OperationStatus.RUNNING
        and op.heartbeat_at is not None
        and op.heartbeat_at >= _stale_before(timezone.now())
    )


def is_live(op: BulkOperation, *, worker: str = "") -> bool:
    """Whether another worker than ``worker`` holds a slice of ``op`` and beats."""
    now = timezone.now()
    held = OperationSlice.objects.filter(
        operation=op, done=False, heartbeat_at__gte=_stale_before(now)
    )
    return held.exclude(claimed_by="").exclude(claimed_by=worker).exists()


def claim(op: BulkOperation, *, worker: str) -> OperationSlice | None:
    """Claim the next free slice of ``op`` for ``worker`` (None: none is free, or the
    operation is not running or was asked to stop)."""
    now = timezone.now()
    with transaction.atomic():
        fresh = (
            BulkOperation.objects.select_for_update(no_key=True)
            .filter(pk=op.pk)
            .values("status", "cancel_requested", "pause_requested")
            .first()
        )
        if not fresh or fresh["status"] != OperationStatus.RUNNING:
            return None
        if fresh["cancel_requested"] or fresh["pause_requested"]:
            return None
        piece = _claimable(op, now).select_for_update(skip_locked=True).first()
        if piece is None:
            return None
        OperationSlice.objects.filter(pk=piece.pk).update(claimed_by=worker, heartbeat_at=now)
        piece.claimed_by, piece.heartbeat_at = worker, now
    return piece


def release(piece: OperationSlice, *, worker: str) -> None:
    OperationSlice.objects.filter(pk=piece.pk, claimed_by=worker).update(claimed_by="")


# --- a worker's run ---------------------------------------------------------------------------
def execute_large(
    op: BulkOperation,
    act: BulkAction,
    scope: QuerySet[Session],
    *,
    worker: str,
    run_chunks: Callable[..., Stop | None],
) -> Stop | None:
    """Claim slices of ``op`` one after the other and run each one's chunks (with
    ``run_chunks``, the executor's loop) until none is free or a stop is asked for;
    return the stop. The action begins once this worker holds a slice. The worker's
    pace (``pacing``: the throttle, its share of the rate; the back-off) carries over
    from slice to slice."""
    act = large_file_action(op, act)
    source = source_for(op, act, scope)
    slices = max(1, op.slices.count())
    throttle = Throttle(bulkops_settings.LARGE_MAX_ROWS_PER_SECOND / slices)
    backoff = BackOff.configured()
    begun = False
    while (piece := claim(op, worker=worker)) is not None:
        if not begun:
            act.begin(op)
            begun = True
        chunks = chunks_for(op, act, source, piece, worker=worker)
        try:
            stop = run_chunks(chunks, after=chunks.cursor, throttle=throttle, backoff=backoff)
        except LostClaim:
            continue
        release(piece, worker=worker)
        if stop is not None:
            return stop
    return None


def large_conclude(op: BulkOperation, act: BulkAction, stop: Stop | None, *, worker: str) -> bool:
    """End ``op`` when ``worker`` is the last one on it: every slice done (``total``
    becomes what the run acted on), or the stop it saw — or that the operation's row
    asks for. Return whether it ended it (then ``op`` is the row as it ended)."""
    act = large_file_action(op, act)
    with transaction.atomic():
        fresh = (
            BulkOperation.objects.select_for_update(no_key=True)
            .filter(pk=op.pk)
            .values("status", *STOP_FIELDS)
            .get()
        )
        if fresh["status"] in FINISHED_OPERATION_STATUSES or is_live(op, worker=worker):
            return False
        if not op.slices.filter(done=False).exists():
            large_finished(op)
            conclude(op, act, None)
            return True
        stop = stop or stop_reason(op, None, fresh=fresh)
        if stop is None:
            return False  # free slices nobody runs: the next task (or the reaper's) will
        conclude(op, act, stop)
        return True
