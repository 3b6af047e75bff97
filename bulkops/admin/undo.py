"""The admin's *Undo* of a finished operation, and its completion report.

Undo follows every admin bulk action: the first pass (GET) renders a confirmation page
with the eligibility partition of the undo (``operation_validate``: nothing changes),
the second (POST with ``post``) calls ``operation_undo(source="admin")`` and redirects
to the new operation's progress page. Who may: whoever the admin shows the operation to
(its owner; a superuser), acting within their own scope.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from bulkops.admin.followup import FollowUpPages
from bulkops.admin.pages import operation_for
from bulkops.engine import (
    Selection,
    Started,
    operation_report,
    operation_undo,
    report_filename,
    undo_refusal,
)
from bulkops.exceptions import error_text
from bulkops.itemstore import previous_statuses
from bulkops.models import BulkOperation, ItemOutcome, OperationSource
from bulkops.ratelimits import UNDO
from bulkops.selectors import operation_items

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

REPORT_CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def undo_selection(op: BulkOperation) -> Selection:
    """What an undo of ``op`` targets: its succeeded items."""
    ids = operation_items(operation=op, outcome=ItemOutcome.SUCCEEDED).values_list(
        "session_id", flat=True
    )
    return Selection(session_ids=list(ids))


class UndoPages(FollowUpPages):
    """``<operation>/undo/`` (confirm, then start) and ``<operation>/report/``."""

    name = UNDO
    template = "admin/bulkops/bulkoperation/undo_confirmation.html"

    def refusal(self, op: BulkOperation) -> str | None:
        return undo_refusal(op)

    def selection(self, op: BulkOperation) -> Selection:
        return undo_selection(op)

    def action(self, op: BulkOperation) -> tuple[str, dict[str, Any]]:
        return UNDO, {"undoes": op.pk}

    def launch(self, request: HttpRequest, op: BulkOperation, **options: Any) -> Started:
        options.pop("selection_token")  # the undo takes what the operation left
        return operation_undo(
            operation=op, user=request.user, source=OperationSource.ADMIN, **options
        )

    def started(self, new: BulkOperation) -> str:
        return ngettext(
            "Undo of %(count)d session started.", "Undo of %(count)d sessions started.", new.total
        ) % {"count": new.total}

    def extra_context(self, op: BulkOperation, context: dict[str, Any]) -> dict[str, Any]:
        return {
            "title": _("Undo %(operation)s: confirm") % {"operation": op.pk},
            "applies": _("undo will apply"),
            "eligible_rows": with_status_after(op, context["eligible_rows"]),
            "status_after_label": _("After the undo"),
        }

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

    def views(self) -> dict[str, Any]:
        return {**super().views(), "report": self.report}


def with_status_after(op: BulkOperation, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The listed eligible sessions with what they are now and what the undo leaves them
    as: the status the operation found (its item's ``previous_status``), or — a soft
    delete's undo — the same status, no longer deleted."""
    if op.action == "delete":
        return [
            {**row, "status": _("%(status)s, deleted") % row, "after": row["status"]}
            for row in rows
        ]
    ids = [row["session_id"] for row in rows]
    found = previous_statuses(operation_id=op.pk, ids=ids)
    return [{**row, "after": found.get(row["session_id"]) or row["status"]} for row in rows]
