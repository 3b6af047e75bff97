"""The admin's bulk actions, generated from the registry, on the same services as the API.

Each follows ``django.contrib.admin.actions.delete_selected``: the first pass renders a
confirmation page (``operation_validate``: nothing changes), the second
(``request.POST["post"]``) calls ``operation_create(source="admin")`` and redirects to
the operation's progress page. Rate limits are ``bulkops.ratelimits``' — one budget for
the API and the admin.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from bulkops.actions import reasons, selectable_actions
from bulkops.admin.forms import CONFIRM_FORM_MARKER, BulkActionForm
from bulkops.admin.pages import progress_url
from bulkops.admin.selection import changelist_selection, sees_every_session
from bulkops.engine import (
    Selection,
    operation_create,
    operation_replay,
    operation_validate,
    request_fingerprint,
)
from bulkops.exceptions import (
    BulkOpsError,
    SelectionConflict,
    SelectionDrift,
    SelectionTokenExpired,
    SelectionTokenInvalid,
    error_text,
)
from bulkops.models import OperationSource
from bulkops.ratelimits import VALIDATE, rate_limit
from bulkops.selectors import user_may_act_on_others

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.db.models import QuerySet
    from django.http import HttpRequest

    from bulkops.actions.base import AdminVariant, BulkAction
    from bulkops.engine import ValidationResult
    from bulkops.models import BulkOperation, Session

#: Rows listed per partition on the confirmation page; the counts are always complete.
LISTED_PER_PARTITION = 100
#: One random token per confirmation page, used as the operation's idempotency key.
CONFIRM_TOKEN = "_bulk_token"
CONFIRM_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: The page's ``selection_token`` (validate's): Confirm runs only what the page showed.
SELECTION_TOKEN = "_bulk_selection_token"
#: Eligible titles the confirmation page names in its summary ("and N more").
SAMPLE_TITLES = 10


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
    """DESIGN §4 applied to the changelist: the action is offered when the user may apply
    it to every row the changelist can show them — their own rows need no permission,
    everyone's need the action's model permission; some parameters need more (hard
    delete: ``bulkops.hard_delete_session``)."""
    if not (user.is_active and user.is_staff):
        return False
    if not all(user.has_perm(p) for p in spec.action.required_permissions(spec.params)):
        return False
    return user_may_act_on_others(user, spec.action.permission) or not sees_every_session(user)


def confirm_key(request: HttpRequest) -> str | None:
    """The idempotency key of this confirmation page's Confirm (one token per page)."""
    token = request.POST.get(CONFIRM_TOKEN, "")
    return f"admin-confirm:{token}" if CONFIRM_TOKEN_RE.fullmatch(token) else None


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

    def confirmed(self) -> bool:
        return bool(self.request.POST.get("post")) and self.form.is_valid()

    def start(self, selection: Selection) -> HttpResponseRedirect:
        """Second pass: start the operation (or find the one this page already
        started) and go to its progress page. The page's ``selection_token`` makes
        ``operation_create`` refuse a selection that drifted since the page was shown
        (SelectionConflict, SelectionTokenInvalid: nothing is created)."""
        user, reason = self.request.user, self.form.audit_reason()
        max_failures = self.form.failure_threshold()
        key = confirm_key(self.request)
        payload = {"selection": asdict(selection), "params": self.params, "reason": reason}
        if max_failures is not None:
            payload["max_failures"] = max_failures
        fingerprint = request_fingerprint(action=self.spec.action_type, payload=payload)

        def replay() -> BulkOperation | None:
            if not key:
                return None
            return operation_replay(user=user, idempotency_key=key, fingerprint=fingerprint)

        # Confirm sent twice (a double click, a resubmitted form): same operation, looked
        # for again under the user's lock (a concurrent twin), never rate limited.
        with rate_limit(request=self.request, scope=self.spec.action_type, exempt=replay) as adm:
            op = adm.exempt or operation_create(
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
            )
            adm.counted = not op.replayed
        if not op.replayed:
            self.announce(op)
        return HttpResponseRedirect(progress_url(op))

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
        with rate_limit(request=self.request, scope=VALIDATE):
            return operation_validate(
                user=self.request.user,
                action=self.spec.action_type,
                selection=selection,
                params=self.params,
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
    notice = ""
    try:
        selection, count = changelist_selection(request, queryset, act)
        if bulk.confirmed():
            try:
                return bulk.start(selection)
            except (SelectionConflict, SelectionTokenInvalid) as exc:
                # What the page showed no longer holds: show the new preview instead.
                notice = drift_notice(exc)
        result = bulk.preview(selection)
    except ValidationError as exc:
        modeladmin.message_user(request, error_text(exc), messages.ERROR)
        return None
    except BulkOpsError as exc:
        # RateLimited, TooManyActiveOperations: a message, and nothing happened.
        modeladmin.message_user(request, exc.message, messages.ERROR)
        return None
    return confirmation_page(bulk, result, selection, count, notice=notice)


def drift_notice(exc: SelectionConflict | SelectionTokenInvalid) -> str:
    """Why Confirm started nothing, for the re-rendered confirmation page."""
    if isinstance(exc, SelectionDrift):
        return _(
            "Nothing was done: the selection changed after you reviewed it — "
            "%(then)s then, %(now)s now. Review the updated preview below and confirm again."
        ) % {
            "then": describe_counts(exc.previous),
            "now": describe_counts(exc.current),
        }
    if isinstance(exc, SelectionTokenExpired):
        return _(
            "Nothing was done: this confirmation page was too old to trust. Review the "
            "updated preview below and confirm again."
        )
    return _(
        "Nothing was done: the options changed, or the page could not be verified. "
        "Review the updated preview below and confirm again."
    )


def describe_counts(counts: dict[str, int]) -> str:
    return ngettext(
        "%(eligible)d eligible of %(total)d session",
        "%(eligible)d eligible of %(total)d sessions",
        counts["total"],
    ) % {"eligible": counts["eligible_count"], "total": counts["total"]}


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
    bulk: BulkRequest, result: ValidationResult, selection: Selection, count: int, *, notice: str
) -> TemplateResponse:
    """First pass: the partition, the options, Confirm / Cancel; nothing changes.
    ``notice``: why a Confirm just started nothing (the selection drifted)."""
    modeladmin, request, spec = bulk.modeladmin, bulk.request, bulk.spec
    context = {
        **modeladmin.admin_site.each_context(request),
        **confirmation_context(request, bulk.queryset, result, selection, count),
        "title": _("%(action)s: confirm") % {"action": spec.label},
        "subtitle": None,
        "opts": modeladmin.opts,
        "form": bulk.form,
        "spec": spec,
        "confirm_marker": CONFIRM_FORM_MARKER,
        "confirm_token_name": CONFIRM_TOKEN,
        "confirm_token": secrets.token_urlsafe(24),
        "selection_token_name": SELECTION_TOKEN,
        "selection_token": result.selection_token,
        "drift_notice": notice,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across") in ("1", "True", "true"),
        "media": modeladmin.media,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, confirmation_templates(modeladmin, spec), context)


def _grouped(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    counts = Counter(item["reason"] for item in items)
    return [
        {"reason": reason, "message": reasons.message_for(reason), "count": n}
        for reason, n in counts.most_common()
    ]


def confirmation_context(
    request: HttpRequest,
    queryset: QuerySet[Session],
    result: ValidationResult,
    selection: Selection,
    count: int,
) -> dict[str, Any]:
    """The partition as the template lists it: counts, reasons, the first rows of each."""
    data = result.as_dict()
    shown_skipped = data["skipped"][:LISTED_PER_PARTITION]
    shown_ineligible = data["ineligible"][:LISTED_PER_PARTITION]
    listed = [i["session_id"] for i in shown_skipped + shown_ineligible]
    titles = dict(queryset.filter(pk__in=listed).values_list("pk", "title"))
    for item in shown_skipped + shown_ineligible:
        item["title"] = titles.get(item["session_id"], "")
        item.setdefault("message", reasons.message_for(item["reason"]))
    sample = data["eligible"][:SAMPLE_TITLES]
    return {
        "result": data,
        "sample_titles": [row["title"] or row["session_id"] for row in sample],
        "sample_more": data["eligible_count"] - len(sample),
        "selected_count": count,
        "selection_filter": selection.filter,
        "eligible_rows": data["eligible"][:LISTED_PER_PARTITION],
        "skipped_rows": shown_skipped,
        "ineligible_rows": shown_ineligible,
        "skipped_groups": _grouped(data["skipped"]),
        "ineligible_groups": _grouped(data["ineligible"]),
        "listed_limit": LISTED_PER_PARTITION,
        "cascade": data.get("cascade"),
        "changelist_url": request.get_full_path(),
    }
