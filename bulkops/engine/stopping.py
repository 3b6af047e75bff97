"""Why a run stops before its items run out, and how the operation then ends.

Between chunks a run asks ``stop_reason``; the answer is a ``Stop`` (or None: go on).
``ENDINGS`` says, per stop, the operation's final status, what its still-pending items
become and the error it carries; ``conclude`` applies it in one transaction. A
``SHUTDOWN`` has no ending: the operation stays ``running`` for the next worker.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from bulkops.actions import reasons
from bulkops.actions.base import BulkAction
from bulkops.conf import bulkops_settings
from bulkops.engine.outcomes import close_remaining, finalise, record_paused
from bulkops.models import (
    FINISHED_OPERATION_STATUSES,
    BulkOperation,
    ItemOutcome,
    OperationStatus,
)

logger = logging.getLogger("bulkops.engine")


class Stop(enum.Enum):
    """Why a run stopped before its items ran out."""

    CANCELLED = "cancelled"
    #: ``BULKOPS_OPERATION_TIMEOUT_SECONDS`` of running time passed.
    TIMEOUT = "timeout"
    #: More than ``max_failures`` items failed.
    FAILURE_THRESHOLD = "failure_threshold"
    PAUSED = "paused"
    #: An all-or-nothing operation had a failed item: every change was undone.
    ROLLED_BACK = "rolled_back"
    #: The worker is shutting down: the operation is left for the next one.
    SHUTDOWN = "shutdown"


#: What ``stop_reason`` reads of the operation's row.
STOP_FIELDS = ("cancel_requested", "pause_requested", "started_at", "paused_seconds", "failed")


def stop_reason(
    op: BulkOperation, should_stop: Callable[[], bool] | None, *, fresh: dict | None = None
) -> Stop | None:
    """Between chunks: CANCELLED, FAILURE_THRESHOLD, PAUSED, TIMEOUT (time paused does
    not count), SHUTDOWN (``should_stop`` says so) or None. ``fresh``: the row's
    ``STOP_FIELDS`` as just read (else they are read now)."""
    if fresh is None:
        fresh = BulkOperation.objects.filter(pk=op.pk).values(*STOP_FIELDS).get()
    if fresh["cancel_requested"]:
        return Stop.CANCELLED
    if over_threshold(op, fresh["failed"]):
        return Stop.FAILURE_THRESHOLD
    if fresh["pause_requested"]:
        return Stop.PAUSED
    if fresh["started_at"]:
        running = (timezone.now() - fresh["started_at"]).total_seconds() - fresh["paused_seconds"]
        if running > timeout_seconds(op):
            return Stop.TIMEOUT
    if should_stop is not None and should_stop():
        return Stop.SHUTDOWN
    return None


def timeout_seconds(op: BulkOperation) -> float:
    """The running time after which ``op`` stops: ``BULKOPS_OPERATION_TIMEOUT_SECONDS``,
    or ``BULKOPS_LARGE_OPERATION_TIMEOUT_SECONDS`` for a large operation."""
    if op.is_large:
        return bulkops_settings.LARGE_OPERATION_TIMEOUT_SECONDS
    return bulkops_settings.OPERATION_TIMEOUT_SECONDS


def over_threshold(op: BulkOperation, failed: int) -> bool:
    max_failures = op.params.get("max_failures")
    return max_failures is not None and failed > max_failures


# --- endings ---------------------------------------------------------------------------------
def _nothing_changed(op: BulkOperation) -> str:
    """What an all-or-nothing operation's stop adds: its transaction was rolled back."""
    if op.params.get("atomic"):
        return " The all-or-nothing operation was rolled back: nothing was changed."
    return ""


def _cancelled_error(op: BulkOperation) -> str:
    return "Cancelled on request." + _nothing_changed(op)


def _timeout_error(op: BulkOperation) -> str:
    seconds = timeout_seconds(op)
    return f"timeout: stopped after {seconds} s." + _nothing_changed(op)


def _threshold_error(op: BulkOperation) -> str:
    op.refresh_from_db(fields=["failed"])
    return (
        f"Stopped at the failure threshold: {op.failed} sessions failed, more than "
        f"max_failures ({op.params['max_failures']}); the rest were not touched."
    )


@dataclass(frozen=True)
class Ending:
    """How an operation ends after a stop."""

    status: str
    #: The reason the still-pending items end ``cancelled`` with (None: left as they are).
    remaining: str | None
    error: Callable[[BulkOperation], str]


ENDINGS: dict[Stop, Ending] = {
    Stop.CANCELLED: Ending(OperationStatus.CANCELLED, reasons.CANCELLED, _cancelled_error),
    Stop.TIMEOUT: Ending(OperationStatus.CANCELLED, reasons.TIMEOUT, _timeout_error),
    Stop.FAILURE_THRESHOLD: Ending(
        OperationStatus.FAILED, reasons.FAILURE_THRESHOLD, _threshold_error
    ),
    # The items already say why (``record_atomic_rollback``), and so does ``op.error``.
    Stop.ROLLED_BACK: Ending(OperationStatus.FAILED, None, lambda op: op.error),
    # The pending items stay pending for the resume.
    Stop.PAUSED: Ending(OperationStatus.PAUSED, None, lambda op: ""),
}


def abort_quietly(act: BulkAction, op: BulkOperation) -> None:
    """``act.abort`` (e.g. an export's partial file goes; it starts over on resume)
    must never keep an operation from ending: its failure is logged."""
    try:
        act.abort(op)
    except Exception:
        logger.exception("abort hook of %s failed", op.pk)


def conclude(op: BulkOperation, act: BulkAction, stop: Stop | None) -> None:
    """End the operation the way its run ended (in one transaction) and load the row
    as it then is into ``op``: per ``ENDINGS`` after a stop; else the action's last
    step and the status its counters give — unless it was finished meanwhile (the
    reaper gave up on it), then as it is."""
    with transaction.atomic():
        if stop is None:
            status = BulkOperation.objects.values_list("status", flat=True).get(pk=op.pk)
            if status in FINISHED_OPERATION_STATUSES:
                op.refresh_from_db()
            else:
                act.finish(op)
                finalise(op)
            return
        ending = ENDINGS[stop]
        abort_quietly(act, op)
        if ending.status == OperationStatus.PAUSED:
            record_paused(op)
            return
        if ending.remaining:
            close_remaining(op, outcome=ItemOutcome.CANCELLED, reason=ending.remaining)
        finalise(op, status=ending.status, error=ending.error(op))
