"""The admin's bulk actions, generated from the registry, on the same services as the API.

Each follows ``django.contrib.admin.actions.delete_selected``: the first pass renders a
confirmation page (``operation_validate``: nothing changes), the second
(``request.POST["post"]``) calls ``operation_create(source="admin")`` and redirects to
the operation's progress page. Rate limits are ``bulkops.ratelimits``' — one budget for
the API and the admin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from bulkops.actions import selectable_actions
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
from bulkops.admin.forms import CONFIRM_FORM_MARKER, BulkActionForm
from bulkops.admin.pages import progress_url
from bulkops.admin.selection import changelist_selection, sees_every_session
from bulkops.engine import (
    Selection,
    operation_create,
    request_fingerprint,
)
from bulkops.exceptions import (
    BulkOpsError,
    error_text,
)
from bulkops.models import OperationSource
from bulkops.selectors import user_may_act_on_others

if TYPE_CHECKING:
    from collections.abc import Mapping

    from django.contrib.admin import ModelAdmin
    from django.db.models import QuerySet
    from django.http import HttpRequest

    from bulkops.actions.base import AdminVariant, BulkAction
    from bulkops.engine import ValidationResult
    from bulkops.models import BulkOperation, Session


@dataclass(frozen=True)
class AdminBulkAction:
    """One admin action: a registered bulk action and one of its admin variants."""

    action: type[BulkAction]
    variant: AdminVariant

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def action_type(self) -> str:
        return self.action.action_type

    @property
    def label(self) -> str:
        return _(self.variant.label)

    @property
    def params(self) -> dict[str, Any]:
        return self.variant.params

    @property
    def destructive(self) -> bool:
        return self.variant.destructive

    @property
    def warning(self) -> str:
        return _(self.variant.warning) if self.variant.warning else ""


def admin_bulk_actions() -> dict[str, AdminBulkAction]:
    """Every admin action of every registered bulk action, by name."""
    return {
        variant.name: AdminBulkAction(action, variant)
        for action in selectable_actions().values()
        for variant in action.variants()
    }


def may_run(user, spec: AdminBulkAction) -> bool:
    """The permission rule applied to the changelist: the action is offered when the user may apply
    it to every row the changelist can show them — their own rows need no permission,
    everyone's need the action's model permission; some parameters need more (hard
    delete: ``bulkops.hard_delete_session``)."""
    if not (user.is_active and user.is_staff):
        return False
    if not all(user.has_perm(p) for p in spec.action.required_permissions(spec.params)):
        return False
    return user_may_act_on_others(user, spec.action.permission) or not sees_every_session(user)


@dataclass
class BulkRequest:
    """One pass of an admin bulk action: who, on what, with which options."""

    modeladmin: ModelAdmin
    request: HttpRequest
    queryset: QuerySet[Session]
    spec: AdminBulkAction
    form: BulkActionForm
    params: dict[str, Any]

    @classmethod
    def parse(cls, modeladmin, request, queryset, spec: AdminBulkAction) -> BulkRequest:
        bound = CONFIRM_FORM_MARKER in request.POST
        form = BulkActionForm(
            request.POST if bound else None, action=spec.action, fixed=spec.params
        )
        params = {**spec.params, **form.action_params()}
        return cls(modeladmin, request, queryset, spec, form, params)

    def for_large(self) -> None:
        """A selection past the cap runs as a large operation, which is never
        all-or-nothing (one transaction over millions of rows): the page does not offer
        it, and no ``atomic`` is sent."""
        self.form.fields.pop("atomic", None)
        self.form.param_specs.pop("atomic", None)
        self.params.pop("atomic", None)

    def confirmed(self) -> bool:
        return bool(self.request.POST.get("post")) and self.form.is_valid()

    def start(self, selection: Selection, *, large: bool) -> HttpResponseRedirect:
        """Second pass: start the operation (or find the one this page already
        started) and go to its progress page. The page's ``selection_token`` makes
        ``operation_create`` refuse a selection that drifted since the page was shown
        (SelectionConflict, SelectionTokenInvalid: nothing is created). A ``large``
        selection (past the cap) runs on every matching session: the page showed
        samples, not a list to leave out."""
        user, reason = self.request.user, self.form.audit_reason()
        max_failures = self.form.failure_threshold()
        eligible_only = runs_on_eligible_only(self.request) and not large
        key = confirm_key(self.request)
        payload = {"selection": asdict(selection), "params": self.params, "reason": reason}
        if max_failures is not None:
            payload["max_failures"] = max_failures
        if eligible_only:
            payload["eligible_only"] = True
        fingerprint = request_fingerprint(action=self.spec.action_type, payload=payload)

        # Confirm sent twice (a double click, a resubmitted form): the same operation
        # (the page's token is the idempotency key), not counted again.
        started = operation_create(
            user=user,
            action=self.spec.action_type,
            selection=selection,
            params=self.params,
            source=OperationSource.ADMIN,
            reason=reason,
            idempotency_key=key,
            fingerprint=fingerprint,
            selection_token=self.request.POST.get(SELECTION_TOKEN) or None,
            max_failures=max_failures,
            eligible_only=eligible_only,
            rate_scope=self.spec.action_type,
        )
        if not started.replayed:
            self.announce(started.operation)
        return HttpResponseRedirect(progress_url(started.operation))

    def announce(self, op: BulkOperation) -> None:
        self.modeladmin.message_user(
            self.request,
            ngettext(
                "%(action)s of %(count)d session started.",
                "%(action)s of %(count)d sessions started.",
                op.total,
            )
            % {"action": self.spec.label, "count": op.total},
            messages.SUCCESS,
        )

    def preview(self, selection: Selection) -> ValidationResult:
        return preview(
            self.request, action=self.spec.action_type, selection=selection, params=self.params
        )


def run_bulk_action(
    modeladmin: ModelAdmin, request: HttpRequest, queryset: QuerySet[Session], spec: AdminBulkAction
) -> HttpResponse | None:
    """Both passes of an admin bulk action; None sends the user back to the changelist
    (with a message saying why, never an error page)."""
    if not may_run(request.user, spec):
        raise PermissionDenied
    bulk = BulkRequest.parse(modeladmin, request, queryset, spec)
    act = spec.action(user=request.user, params=bulk.params)
    notices = NO_NOTICES
    try:
        selection, count = changelist_selection(request, queryset, act)
        large = count > act.max_sessions
        if large:
            bulk.for_large()
        if bulk.confirmed():
            started, notices = confirm(lambda: bulk.start(selection, large=large))
            if started:
                return started
        result = bulk.preview(selection)
    except ValidationError as exc:
        modeladmin.message_user(request, error_text(exc), messages.ERROR)
        return None
    except BulkOpsError as exc:
        # The preview itself refused (validate's rate limit): a message, nothing happened.
        modeladmin.message_user(request, exc.message, messages.ERROR)
        return None
    return confirmation_page(bulk, result, selection, count, notices=notices)


# --- the confirmation page ----------------------------------------------------------------------
def confirmation_templates(modeladmin: ModelAdmin, spec: AdminBulkAction) -> list[str]:
    opts = modeladmin.opts
    return [
        f"admin/{opts.app_label}/{opts.model_name}/bulk_{spec.action_type}_confirmation.html",
        f"admin/{opts.app_label}/{opts.model_name}/bulk_confirmation.html",
        f"admin/{opts.app_label}/bulk_confirmation.html",
        "admin/bulk_confirmation.html",
    ]


def confirmation_page(
    bulk: BulkRequest,
    result: ValidationResult,
    selection: Selection,
    count: int,
    *,
    notices: Mapping[str, str],
) -> TemplateResponse:
    """First pass: the partition, the options, Confirm / Cancel; nothing changes.
    ``notices``: why a Confirm just started nothing (``confirmation.confirm``)."""
    modeladmin, request, spec = bulk.modeladmin, bulk.request, bulk.spec
    context = {
        **page_context(modeladmin, request),
        **confirmation_context(request, bulk.queryset, result, selection, count),
        **limits_context(request, spec.action_type),
        **notices,
        "title": _("%(action)s: confirm") % {"action": spec.label},
        "form": bulk.form,
        "spec": spec,
        "confirm_marker": CONFIRM_FORM_MARKER,
        "selection_token_name": SELECTION_TOKEN,
        "selection_token": result.selection_token,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across") in ("1", "True", "true"),
    }
    return TemplateResponse(request, confirmation_templates(modeladmin, spec), context)
