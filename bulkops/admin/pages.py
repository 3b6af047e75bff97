"""The operation pages of ``BulkOperationAdmin``: progress (live over the WebSocket,
with a polling fallback), its JSON, cancel, pause, resume and download (retry and undo,
which have a confirmation page: ``followup``, ``undo``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from bulkops.actions import get_action, reasons
from bulkops.engine import (
    operation_cancel,
    operation_pause,
    operation_resume,
    retryable_items,
    undo_refusal,
    undone_by,
)
from bulkops.exceptions import BulkOpsError
from bulkops.exports.storage import export_path, file_state
from bulkops.models import BulkOperation, OperationStatus
from bulkops.representations import operation_label, operation_representation, rate_per_second
from bulkops.selectors import operation_slices, operations_for_admin

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.http import HttpRequest


def progress_url(op: BulkOperation) -> str:
    return reverse("admin:bulkops_bulkoperation_progress", args=[op.pk])


def operation_for(request: HttpRequest, operation_id: str) -> BulkOperation:
    """The operation if the admin shows it to the user; else 404."""
    return get_object_or_404(operations_for_admin(user=request.user), pk=operation_id)


def file_of(op: BulkOperation) -> str | None:
    """The operation's file state (``file_state``), or None when it writes no file."""
    return file_state(op) if get_action(op.action).produces_file else None


def may_control(request: HttpRequest, op: BulkOperation) -> bool:
    """Cancel, pause and resume: the operation's owner, or a superuser."""
    return op.user_id == request.user.pk or request.user.is_superuser


def may_pause(request: HttpRequest, op: BulkOperation) -> bool:
    """Offered while it is pending, or running (not atomic) with no pause or cancel asked."""
    running = op.status == OperationStatus.RUNNING and not op.params.get("atomic")
    asked = op.pause_requested or op.cancel_requested
    pausable = op.status == OperationStatus.PENDING or running
    return pausable and not asked and may_control(request, op)


#: A rate over less running time than this says little ("1600/s" for 16 sessions in
#: 10 ms): the page shows none (progress.js agrees).
MIN_RATE_SECONDS = 1.0


def seconds_text(value: float | None) -> str:
    """A duration as the pages show it (progress.js writes the same): ``—``, ``40 ms``,
    ``2.5 s``, ``3 min 20 s``."""
    if value is None:
        return "—"
    if value < 1:
        return f"{round(value * 1000)} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes = int(value // 60)
    return f"{minutes} min {round(value - minutes * 60)} s"


def left_out(op: BulkOperation) -> list[dict[str, Any]]:
    """What the confirmation page previewed as not eligible or skipped and the run left
    out (``BulkOperation.excluded``), by reason: never items, never failures."""
    return [
        {
            **group,
            "kind": kind,
            "message": reasons.message_for(group["reason"]),
            "more": group["count"] - len(group["sample"]),
        }
        for kind in ("ineligible", "skipped")
        for group in op.excluded.get(kind, [])
    ]


def live_state(op: BulkOperation) -> dict[str, Any]:
    """The operation representation plus what the page shows beside it."""
    data = operation_representation(op)
    timed = (data["duration_seconds"] or 0) >= MIN_RATE_SECONDS
    data["rate"] = rate_per_second(op) if timed else None
    # The contract's /api/download/<file> (same rules as the admin's own download view).
    data["download_link"] = data.get("download_url") if file_of(op) == "ready" else None
    # A large operation's slices: how many workers are on it now (polled, not in events).
    tally = operation_slices(operation=op)
    data["slices"] = asdict(tally) if tally is not None else None
    return data


class OperationPages:
    """The progress page, its JSON, cancel, retry and download, for BulkOperationAdmin."""

    def __init__(self, modeladmin: ModelAdmin) -> None:
        self.modeladmin = modeladmin

    def progress(self, request: HttpRequest, operation_id: str) -> TemplateResponse:
        op = operation_for(request, operation_id)
        state = live_state(op)
        admin = self.modeladmin
        excluded = left_out(op)
        context = {
            **admin.admin_site.each_context(request),
            "title": _("%(action)s operation") % {"action": get_action(op.action).display_name},
            "subtitle": op.pk,
            "opts": admin.opts,
            "operation": op,
            "state": state,
            "action_label": operation_label(op),
            "can_cancel": not op.is_finished and may_control(request, op),
            "can_pause": may_pause(request, op),
            "can_resume": op.status == OperationStatus.PAUSED and may_control(request, op),
            "can_retry": op.is_finished
            and op.user_id == request.user.pk
            and retryable_items(op).exists(),
            "can_undo": op.is_finished and undo_refusal(op) is None,
            "undone_by": undone_by(op) if op.is_finished else None,
            "report_url": reverse("admin:bulkops_bulkoperation_report", args=[op.pk]),
            "status_url": reverse("admin:bulkops_bulkoperation_status", args=[op.pk]),
            "detail_url": reverse("admin:bulkops_bulkoperation_change", args=[op.pk]),
            "failed_items_url": reverse("admin:bulkops_bulkoperation_change", args=[op.pk])
            + "?outcome=failed#items",
            "ws_path": "/ws/bulk/",
            "expired": file_of(op) == "expired",
            "left_out": excluded,
            "left_out_total": sum(group["count"] for group in excluded),
            "duration_text": seconds_text(state["duration_seconds"]),
            "eta_text": seconds_text(state["eta_seconds"]),
            "media": admin.media,
        }
        request.current_app = admin.admin_site.name
        return TemplateResponse(request, "admin/bulkops/bulkoperation/progress.html", context)

    def status(self, request: HttpRequest, operation_id: str) -> JsonResponse:
        return JsonResponse(live_state(operation_for(request, operation_id)))

    def cancel(self, request: HttpRequest, operation_id: str) -> HttpResponseRedirect:
        op = operation_for(request, operation_id)
        try:
            op = operation_cancel(operation=op)
        except BulkOpsError as exc:
            self.modeladmin.message_user(request, exc.message, messages.WARNING)
        else:
            self.modeladmin.message_user(
                request,
                _("Cancelled.") if op.is_finished else _("Cancelling after the current chunk…"),
                messages.SUCCESS,
            )
        return HttpResponseRedirect(progress_url(op))

    def pause(self, request: HttpRequest, operation_id: str) -> HttpResponseRedirect:
        return self._control(request, operation_id, operation_pause)

    def resume(self, request: HttpRequest, operation_id: str) -> HttpResponseRedirect:
        return self._control(request, operation_id, operation_resume)

    def _control(self, request: HttpRequest, operation_id: str, service) -> HttpResponseRedirect:
        """Pause or resume, then back to the progress page with a message saying what
        happened (a conflict, e.g. it finished meanwhile, is a warning, not an error page)."""
        op = operation_for(request, operation_id)
        if not may_control(request, op):
            raise PermissionDenied
        try:
            op = service(operation=op)
        except BulkOpsError as exc:
            self.modeladmin.message_user(request, exc.message, messages.WARNING)
            return HttpResponseRedirect(progress_url(op))
        if op.status == OperationStatus.PAUSED:
            text = _("Paused; resume it when you are ready.")
        elif op.pause_requested:
            text = _("Pausing after the current chunk…")
        else:
            text = _("Resumed: the operation is queued again.")
        self.modeladmin.message_user(request, text, messages.SUCCESS)
        return HttpResponseRedirect(progress_url(op))

    def download(self, request: HttpRequest, operation_id: str) -> HttpResponse:
        op = operation_for(request, operation_id)
        state = file_of(op)
        if state == "expired":
            return HttpResponse(
                _("This export has expired; run the export again."),
                status=410,
                content_type="text/plain; charset=utf-8",
            )
        if state != "ready":
            raise Http404
        path = export_path(op.export_file)
        return FileResponse(open(path, "rb"), as_attachment=True, filename=op.export_file)

    def views(self) -> dict[str, Any]:
        return {
            "progress": self.progress,
            "status": self.status,
            "cancel": require_POST(self.cancel),
            "pause": require_POST(self.pause),
            "resume": require_POST(self.resume),
            "download": self.download,
        }
