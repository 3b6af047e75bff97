"""The admin's *Undo* of a finished operation, and its completion report.

Undo follows every admin bulk action: the first pass (GET) renders a confirmation page
with the eligibility partition of the undo (``operation_validate``: nothing changes),
the second (POST with ``post``) calls ``operation_undo(source="admin")`` and redirects
to the new operation's progress page. Who may: whoever the admin shows the operation to
(its owner; a superuser), acting within their own scope.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponseBadRequest, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from bulkops.admin.actions import (
    CONFIRM_TOKEN,
    LISTED_PER_PARTITION,
    confirm_key,
    confirmation_context,
)
from bulkops.admin.pages import operation_for, progress_url
from bulkops.engine import (
    Selection,
    action_build,
    operation_replay,
    operation_report,
    operation_undo,
    operation_validate,
    report_filename,
    request_fingerprint,
    undo_refusal,
)
from bulkops.exceptions import BulkOpsError, error_text
from bulkops.models import BulkOperation, ItemOutcome, OperationSource
from bulkops.ratelimits import UNDO, VALIDATE, rate_limit
from bulkops.selectors import operation_items, sessions_in_scope

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.http import HttpRequest, HttpResponse

REPORT_CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def undo_selection(op: BulkOperation) -> Selection:
    """What an undo of ``op`` targets: its succeeded items."""
    ids = operation_items(operation=op, outcome=ItemOutcome.SUCCEEDED).values_list(
        "session_id", flat=True
    )
    return Selection(session_ids=list(ids))


class UndoPages:
    """``<operation>/undo/`` (confirm, then start) and ``<operation>/report/``."""

    def __init__(self, modeladmin: ModelAdmin) -> None:
        self.modeladmin = modeladmin

    def fail(self, request: HttpRequest, op: BulkOperation, text: str) -> HttpResponseRedirect:
        self.modeladmin.message_user(request, text, messages.ERROR)
        return HttpResponseRedirect(progress_url(op))

    def undo(self, request: HttpRequest, operation_id: str) -> HttpResponse:
        op = operation_for(request, operation_id)
        try:
            if request.method == "POST" and request.POST.get("post"):
                return self.start(request, op)
            refusal = undo_refusal(op)
            if refusal:
                return self.fail(request, op, refusal)
            return self.confirmation(request, op)
        except ValidationError as exc:
            return self.fail(request, op, error_text(exc))
        except BulkOpsError as exc:
            return self.fail(request, op, exc.message)

    def start(self, request: HttpRequest, op: BulkOperation) -> HttpResponseRedirect:
        """Second pass: start the undo (or find the one this page already started)."""
        key = confirm_key(request)
        fingerprint = request_fingerprint(action=UNDO, payload={"operation_id": op.pk})
        replay = key and operation_replay(
            user=request.user, idempotency_key=key, fingerprint=fingerprint
        )
        if replay:
            return HttpResponseRedirect(progress_url(replay))
        with rate_limit(request=request, scope=UNDO):
            new = operation_undo(
                operation=op,
                user=request.user,
                source=OperationSource.ADMIN,
                idempotency_key=key,
                fingerprint=fingerprint,
            )
        self.modeladmin.message_user(
            request,
            ngettext(
                "Undo of %(count)d session started.",
                "Undo of %(count)d sessions started.",
                new.total,
            )
            % {"count": new.total},
            messages.SUCCESS,
        )
        return HttpResponseRedirect(progress_url(new))

    def confirmation(self, request: HttpRequest, op: BulkOperation) -> TemplateResponse:
        """First pass: the undo's partition, Confirm / Cancel; nothing changes."""
        params = {"undoes": op.pk}
        selection = undo_selection(op)
        with rate_limit(request=request, scope=VALIDATE):
            result = operation_validate(
                user=request.user, action=UNDO, selection=selection, params=params
            )
        act = action_build(user=request.user, action=UNDO, params=params)
        scope = sessions_in_scope(user=request.user, action=act)
        admin = self.modeladmin
        count = len(selection.session_ids or [])
        context = {
            **admin.admin_site.each_context(request),
            **confirmation_context(request, scope, result, selection, count),
            "title": _("Undo %(operation)s: confirm") % {"operation": op.pk},
            "subtitle": None,
            "opts": admin.opts,
            "operation": op,
            "progress_url": progress_url(op),
            "confirm_token_name": CONFIRM_TOKEN,
            "confirm_token": secrets.token_urlsafe(24),
            "listed_limit": LISTED_PER_PARTITION,
            "media": admin.media,
        }
        request.current_app = admin.admin_site.name
        return TemplateResponse(
            request, "admin/bulkops/bulkoperation/undo_confirmation.html", context
        )

    def report(self, request: HttpRequest, operation_id: str) -> HttpResponse:
        """The completion report (``?format=csv|json``, ``?outcome=``) of an operation
        the admin shows the user; any other format or outcome is a 400 saying so, as
        the API answers."""
        op = operation_for(request, operation_id)
        fmt = request.GET.get("format", "csv")
        try:
            pieces = operation_report(
                operation=op,
                fmt=fmt,
                outcome=request.GET.get("outcome"),
                asynchronous=isinstance(request, ASGIRequest),
            )
        except ValidationError as exc:
            return HttpResponseBadRequest(error_text(exc), content_type="text/plain; charset=utf-8")
        response = StreamingHttpResponse(pieces, content_type=REPORT_CONTENT_TYPES[fmt])
        response["Content-Disposition"] = f'attachment; filename="{report_filename(op, fmt)}"'
        return response

    def views(self) -> dict:
        return {"undo": self.undo, "report": self.report}
