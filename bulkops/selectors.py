"""Read-only queries and the one operation representation every client sees."""

from __future__ import annotations

import datetime
import re
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from bulkops.exceptions import OperationNotFound
from bulkops.models import (
    ACTIVE_OPERATION_STATUSES,
    BulkOperation,
    BulkOperationItem,
    ItemOutcome,
    Session,
    SessionStatus,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from bulkops.actions.base import BulkAction

#: Failed items listed in an operation's representation; the rest via the items list.
MAX_ERRORS_IN_REPRESENTATION = 100


def user_may_act_on_others(user: AbstractBaseUser, permission: str) -> bool:
    """Staff with the model permission may act on every user's sessions (DESIGN §4)."""
    return bool(user.is_active and user.is_staff and user.has_perm(permission))


def sessions_in_scope(*, user: AbstractBaseUser, action: BulkAction) -> QuerySet[Session]:
    """The sessions ``user`` may target with ``action``: anything else is ``not_found``."""
    qs = action.base_queryset()
    if user_may_act_on_others(user, action.permission):
        return qs
    return qs.filter(owner=user)


def sessions_for_user(*, user: AbstractBaseUser) -> QuerySet[Session]:
    """Sessions a user may list: their own; staff with view permission see everyone's."""
    qs = Session.objects.select_related("owner")
    if user_may_act_on_others(user, "bulkops.view_session"):
        return qs
    return qs.filter(owner=user)


def session_counts_by_status(*, user: AbstractBaseUser) -> dict[str, int]:
    """The user's own sessions counted by status, plus ``deleted`` and ``total``."""
    own = Session.objects.filter(owner=user)
    counts = {status: 0 for status in SessionStatus.values}
    for row in own.filter(deleted_at__isnull=True).values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    counts["deleted"] = own.filter(deleted_at__isnull=False).count()
    counts["total"] = sum(counts[s] for s in SessionStatus.values) + counts["deleted"]
    return counts


def operations_for_user(*, user: AbstractBaseUser) -> QuerySet[BulkOperation]:
    return BulkOperation.objects.filter(user=user).order_by("-created_at", "-pk")


def operation_get_for_user(*, user: AbstractBaseUser, operation_id: str) -> BulkOperation:
    """Return the user's operation; raise OperationNotFound for a missing or foreign one."""
    try:
        return operations_for_user(user=user).get(pk=operation_id)
    except (BulkOperation.DoesNotExist, ValueError) as exc:
        raise OperationNotFound("No such operation.") from exc


def active_operations_count(*, user: AbstractBaseUser) -> int:
    return BulkOperation.objects.filter(user=user, status__in=ACTIVE_OPERATION_STATUSES).count()


def operation_errors(*, operation: BulkOperation, limit: int = MAX_ERRORS_IN_REPRESENTATION):
    return list(
        BulkOperationItem.objects.filter(operation=operation, outcome=ItemOutcome.FAILED)
        .order_by("session_id")
        .values("session_id", "reason", "message")[:limit]
    )


def operation_status_url(operation_id: str) -> str:
    return f"/api/bulk/operations/{operation_id}/status"


def download_url(filename: str) -> str:
    return f"/api/download/{filename}"


def _seconds(delta: datetime.timedelta) -> float:
    return round(delta.total_seconds(), 3)


def operation_representation(operation: BulkOperation, *, errors: bool = True) -> dict[str, Any]:
    """The operation as the status endpoint, events and admin page show it (DESIGN §5)."""
    op = operation
    now = timezone.now()
    progress = 100 if op.total == 0 and op.is_finished else 0
    if op.total:
        progress = int(op.processed * 100 / op.total)
        if op.is_finished:
            progress = 100
    duration = None
    if op.started_at:
        duration = _seconds((op.finished_at or now) - op.started_at)
    eta = None
    if op.is_finished:
        eta = 0.0
    elif op.started_at and op.processed:
        elapsed = (now - op.started_at).total_seconds()
        eta = round(elapsed / op.processed * (op.total - op.processed), 3)
    data: dict[str, Any] = {
        "operation_id": op.id,
        "action": op.action,
        "status": op.status,
        "progress": progress,
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
        "created_at": op.created_at.isoformat() if op.created_at else None,
        "started_at": op.started_at.isoformat() if op.started_at else None,
        "finished_at": op.finished_at.isoformat() if op.finished_at else None,
        "duration_seconds": duration,
        "eta_seconds": eta,
        "version": op.version,
        "status_url": operation_status_url(op.id),
    }
    if op.action == "export":
        data["download_url"] = download_url(op.export_file)
        data["expires_at"] = op.expires_at.isoformat() if op.expires_at else None
    return data


def stale_operations(*, older_than: datetime.datetime) -> QuerySet[BulkOperation]:
    """Running operations whose worker stopped beating (crashed or killed)."""
    return BulkOperation.objects.filter(status="running").filter(
        Q(heartbeat_at__lt=older_than) | Q(heartbeat_at__isnull=True)
    )


# --- read by the HTTP API ------------------------------------------------------------------
#: A download name as export writes it: ``session_export_YYYYMMDD_<operation id>.csv|json``.
EXPORT_FILENAME_RE = re.compile(r"session_export_(\d{8})_(op-[0-9a-f]{32})\.(csv|json)")


def operation_accepted(operation: BulkOperation) -> dict[str, Any]:
    """The 202 answer of an action endpoint for ``operation`` (DESIGN §5)."""
    from bulkops.actions import get_action

    act = get_action(operation.action)(user=operation.user, params=operation.params)
    data: dict[str, Any] = {
        "success": True,
        "operation_id": operation.id,
        "action": operation.action,
        "status": operation.status,
        "total": operation.total,
        "status_url": operation_status_url(operation.id),
        "estimated_duration_seconds": act.estimated_seconds(operation.total),
    }
    if operation.action == "export":
        data["download_url"] = download_url(operation.export_file)
        data["metadata"] = {
            "format": operation.params.get("format"),
            "expires_at": operation.expires_at.isoformat() if operation.expires_at else None,
        }
    return data


def operation_items(*, operation: BulkOperation, outcome: str | None = None):
    """The operation's items in session-id order, optionally of one outcome."""
    qs = BulkOperationItem.objects.filter(operation=operation).order_by("session_id")
    if outcome:
        qs = qs.filter(outcome=outcome)
    return qs


def export_operation_for_download(*, user: AbstractBaseUser, filename: str) -> BulkOperation:
    """Return the export operation that owns the download ``filename``; raise
    OperationNotFound when the name is malformed or unknown, or the caller is neither
    its owner nor staff allowed to view sessions (they cannot tell which)."""
    match = EXPORT_FILENAME_RE.fullmatch(filename)
    if match is None:
        raise OperationNotFound("No such file.")
    qs = BulkOperation.objects.filter(pk=match.group(2), action="export", export_file=filename)
    if not user_may_act_on_others(user, "bulkops.view_session"):
        qs = qs.filter(user=user)
    operation = qs.first()
    if operation is None:
        raise OperationNotFound("No such file.")
    return operation


def export_file_state(operation: BulkOperation) -> str:
    """``ready``, ``expired``, ``pending`` (still being written) or ``missing``."""
    from bulkops.actions.export import export_path

    if operation.expires_at is not None and operation.expires_at <= timezone.now():
        return "expired"
    if not operation.is_finished:
        return "pending"
    if operation.status != "completed" and operation.status != "partial":
        return "missing"
    return "ready" if export_path(operation.export_file).is_file() else "missing"
