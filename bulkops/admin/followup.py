"""Confirmation pages that start from a finished operation: *Retry failed items* here,
*Undo* in ``undo``. Like every admin bulk action they take two passes: the first (GET)
renders the eligibility partition of what the new operation would take
(``operation_validate``: nothing changes), the second (POST with ``post``) starts it and
redirects to its progress page. Confirm runs on the eligible sessions only unless the
page's "run on" says every one (``confirmation``); a rate limit or the active-operations
cap that refuses Confirm shows the page again with why; a selection that drifted since
the page was shown starts nothing (retry: the page's ``selection_token``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from bulkops.admin.confirmation import (
    NO_NOTICES,
    SELECTION_TOKEN,
    confirm,
    confirm_key,
    confirmation_context,
    limits_context,
    page_context,
    preview,
    runs_on_eligible_only,
)
from bulkops.admin.pages import operation_for, progress_url
from bulkops.engine import (
    Selection,
    Started,
    action_build,
    operation_retry,
    request_fingerprint,
    retry_refusal,
    retryable_items,
)
from bulkops.exceptions import (
    BulkOpsError,
    error_text,
)
from bulkops.models import OperationSource
from bulkops.ratelimits import RETRY
from bulkops.selectors import sessions_in_scope

if TYPE_CHECKING:
    from collections.abc import Mapping

    from django.contrib.admin import ModelAdmin
    from django.http import HttpRequest, HttpResponse

    from bulkops.models import BulkOperation


class FollowUpPages:
    """One ``<operation>/<name>/`` view: the confirmation page, then the start."""

    #: The view's name (URL ``<operation>/<name>/``) and Confirm's rate-limit scope.
    name: str
    template: str

    def __init__(self, modeladmin: ModelAdmin) -> None:
        self.modeladmin = modeladmin

    # --- what a kind of follow-up declares ---------------------------------------------
    def check_access(self, request: HttpRequest, op: BulkOperation) -> None:
        """Raise PermissionDenied when the user may see ``op`` but not follow it up."""

    def refusal(self, op: BulkOperation) -> str | None:
        """Why ``op`` cannot be followed up this way now, or None (the service checks
        again when it starts: a Confirm sent twice finds the operation it started)."""
        raise NotImplementedError

    def selection(self, op: BulkOperation) -> Selection:
        raise NotImplementedError

    def action(self, op: BulkOperation) -> tuple[str, dict[str, Any]]:
        """The new operation's action and parameters (to validate)."""
        raise NotImplementedError

    def launch(self, request: HttpRequest, op: BulkOperation, **options: Any) -> Started:
        """Start the new operation: one engine call (``options``: idempotency_key,
        fingerprint, eligible_only, selection_token, rate_scope)."""
        raise NotImplementedError

    def started(self, new: BulkOperation) -> str:
        raise NotImplementedError

    def extra_context(self, op: BulkOperation, context: dict[str, Any]) -> dict[str, Any]:
        return {}

    # --- the view ------------------------------------------------------------------------
    def views(self) -> dict[str, Any]:
        return {self.name: self.view}

    def fail(self, request: HttpRequest, op: BulkOperation, text: str) -> HttpResponseRedirect:
        self.modeladmin.message_user(request, text, messages.ERROR)
        return HttpResponseRedirect(progress_url(op))

    def view(self, request: HttpRequest, operation_id: str) -> HttpResponse:
        op = operation_for(request, operation_id)
        self.check_access(request, op)
        notices = NO_NOTICES
        try:
            if request.method == "POST" and request.POST.get("post"):
                started, notices = confirm(lambda: self.start(request, op))
                if started:
                    return started
            refusal = self.refusal(op)
            if refusal:
                return self.fail(request, op, refusal)
            return self.confirmation(request, op, notices)
        except ValidationError as exc:
            return self.fail(request, op, error_text(exc))
        except BulkOpsError as exc:
            return self.fail(request, op, exc.message)

    def start(self, request: HttpRequest, op: BulkOperation) -> HttpResponseRedirect:
        """Second pass: start the new operation (or find the one this page started)."""
        key = confirm_key(request)
        eligible_only = runs_on_eligible_only(request)
        fingerprint = request_fingerprint(
            action=self.name, payload={"operation_id": op.pk, "eligible_only": eligible_only}
        )
        started = self.launch(
            request,
            op,
            idempotency_key=key,
            fingerprint=fingerprint,
            eligible_only=eligible_only,
            selection_token=request.POST.get(SELECTION_TOKEN) or None,
            rate_scope=self.name,
        )
        if not started.replayed:
            self.modeladmin.message_user(request, self.started(started.operation), messages.SUCCESS)
        return HttpResponseRedirect(progress_url(started.operation))

    def confirmation(
        self, request: HttpRequest, op: BulkOperation, notices: Mapping[str, str]
    ) -> TemplateResponse:
        """First pass: the partition, the "run on" choice, Confirm / Cancel."""
        action, params = self.action(op)
        selection = self.selection(op)
        result = preview(request, action=action, selection=selection, params=params)
        act = action_build(user=request.user, action=action, params=params)
        scope = sessions_in_scope(user=request.user, action=act)
        admin = self.modeladmin
        context = {
            **page_context(admin, request),
            **confirmation_context(
                request, scope, result, selection, len(selection.session_ids or [])
            ),
            **limits_context(request, self.name),
            **notices,
            "operation": op,
            "progress_url": progress_url(op),
        }
        context.update(self.extra_context(op, context))
        return TemplateResponse(request, self.template, context)


class RetryPages(FollowUpPages):
    """*Retry failed items*: a new operation over the failed items of a finished one
    (``operation_retry``; not ``not_found`` ones), by its owner only."""

    name = RETRY
    template = "admin/bulkops/bulkoperation/retry_confirmation.html"

    def check_access(self, request: HttpRequest, op: BulkOperation) -> None:
        if op.user_id != request.user.pk:
            raise PermissionDenied

    def refusal(self, op: BulkOperation) -> str | None:
        return retry_refusal(op)

    def selection(self, op: BulkOperation) -> Selection:
        ids = retryable_items(op).values_list("session_id", flat=True)
        return Selection(session_ids=list(ids))

    def action(self, op: BulkOperation) -> tuple[str, dict[str, Any]]:
        return op.action, op.params

    def launch(self, request: HttpRequest, op: BulkOperation, **options: Any) -> Started:
        return operation_retry(
            operation=op, user=request.user, source=OperationSource.ADMIN, **options
        )

    def started(self, new: BulkOperation) -> str:
        return ngettext(
            "Retrying %(count)d failed session.", "Retrying %(count)d failed sessions.", new.total
        ) % {"count": new.total}

    def extra_context(self, op: BulkOperation, context: dict[str, Any]) -> dict[str, Any]:
        return {
            "title": _("Retry failed items of %(operation)s: confirm") % {"operation": op.pk},
            "applies": _("the retry will apply"),
            "selection_token_name": SELECTION_TOKEN,
            "selection_token": context["result"]["selection_token"],
        }
