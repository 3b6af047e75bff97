"""The one shape of an operation every interface shows: the status
endpoint, the events, the admin pages and the ``bulk`` command all read it here, so
progress, ETA and duration are worked out once."""

from __future__ import annotations

import datetime
from typing import Any

from django.urls import reverse
from django.utils import timezone

from bulkops.actions import get_action
from bulkops.models import BulkOperation, OperationStatus
from bulkops.selectors import operation_errors


def _iso(moment: datetime.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def progress_percent(op: BulkOperation) -> int:
    """0–100; a finished operation is at 100 whatever its counts."""
    if op.is_finished:
        return 100
    return int(op.processed * 100 / op.total) if op.total else 0


def duration_seconds(op: BulkOperation, *, now: datetime.datetime | None = None) -> float | None:
    """Seconds it has been running since it started (until it finished), time spent
    paused left out; None before it started."""
    if not op.started_at:
        return None
    end = op.finished_at or op.paused_at or now or timezone.now()
    return round(max((end - op.started_at).total_seconds() - op.paused_seconds, 0.0), 3)


def eta_seconds(op: BulkOperation, *, now: datetime.datetime | None = None) -> float | None:
    """Seconds left at the rate so far (time paused left out); 0 once finished; None
    before the first chunk, and while paused (it waits for a resume, not a worker)."""
    if op.is_finished:
        return 0.0
    if op.status == OperationStatus.PAUSED or not (op.started_at and op.processed):
        return None
    elapsed = duration_seconds(op, now=now) or 0.0
    return round(elapsed / op.processed * (op.total - op.processed), 3)


def rate_per_second(op: BulkOperation) -> float | None:
    """Items processed per second so far, or None before there is a rate."""
    duration = duration_seconds(op)
    return round(op.processed / duration, 1) if duration and op.processed else None


def status_url(operation_id: str) -> str:
    return reverse("bulkops-api:operation-status", args=[operation_id])


def operation_label(op: BulkOperation) -> str:
    """A person's name for what the operation does (``Hard delete``, ``Export (JSON)``)."""
    return get_action(op.action).label(op.params)


def download_url(filename: str) -> str:
    """The API's download URL of an export file."""
    return reverse("bulkops-api:download", args=[filename])


def _file(op: BulkOperation) -> dict[str, Any]:
    """The download link and expiry of an operation whose action writes a file."""
    if not get_action(op.action).produces_file:
        return {}
    return {"download_url": download_url(op.export_file), "expires_at": _iso(op.expires_at)}


def operation_representation(operation: BulkOperation, *, errors: bool = True) -> dict[str, Any]:
    """The operation as the status endpoint, events and admin page show it."""
    op = operation
    now = timezone.now()
    return {
        "operation_id": op.id,
        "action": op.action,
        "status": op.status,
        "progress": progress_percent(op),
        "total": op.total,
        "processed": op.processed,
        "succeeded": op.succeeded,
        "skipped": op.skipped,
        "failed": op.failed,
        "cancelled": op.cancelled,
        "errors": operation_errors(operation=op) if errors and op.failed else [],
        "error": op.error,
        "source": op.source,
        "params": op.params,
        "reason": op.reason,
        "created_at": _iso(op.created_at),
        "started_at": _iso(op.started_at),
        "finished_at": _iso(op.finished_at),
        "duration_seconds": duration_seconds(op, now=now),
        "eta_seconds": eta_seconds(op, now=now),
        "pause_requested": op.pause_requested,
        "paused_at": _iso(op.paused_at),
        "version": op.version,
        "status_url": status_url(op.id),
        **_file(op),
    }


def operation_accepted(operation: BulkOperation) -> dict[str, Any]:
    """The 202 answer of an action endpoint for ``operation``."""
    act = get_action(operation.action)(user=operation.user, params=operation.params)
    return {
        "success": True,
        "operation_id": operation.id,
        "action": operation.action,
        "status": operation.status,
        "total": operation.total,
        "status_url": status_url(operation.id),
        "estimated_duration_seconds": act.estimated_seconds(operation.total),
        **({"download_url": download_url(operation.export_file)} if act.produces_file else {}),
        **act.accepted(operation),
    }
