"""The admin's bulk actions and operation pages, on the same services as the API.

An admin action follows ``django.contrib.admin.actions.delete_selected``: the first
pass renders a confirmation page (``operation_validate``: nothing changes), the second
(``request.POST["post"]``) calls ``operation_create(source="admin")`` and redirects to
the operation's progress page. Rate limits are ``bulkops.ratelimits``' — one budget for
the API and the admin.
"""

from __future__ import annotations

import datetime
import re
import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import (
    FileResponse,
    Http404,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from bulkops.actions import get_action, reasons
from bulkops.actions.export import export_path
from bulkops.exceptions import BulkOpsError
from bulkops.forms import CONFIRM_FORM_MARKER, BulkActionForm
from bulkops.models import BulkOperation, OperationSource
from bulkops.ratelimits import rate_limit_check, rate_limit_consume
from bulkops.selectors import download_url, operation_representation, user_may_act_on_others
from bulkops.services import (
    Selection,
    operation_cancel,
    operation_create,
    operation_replay,
    operation_retry,
    operation_validate,
    request_fingerprint,
    sessions_filter,
)

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.db.models import QuerySet
    from django.http import HttpRequest

    from bulkops.actions.base import BulkAction
    from bulkops.models import Session

#: Rows listed per partition on the confirmation page; the counts are always complete.
LISTED_PER_PARTITION = 100
#: Changelist parameters that do not change which rows match.
NEUTRAL_PARAMS = {"o", "p", "all", "e"}
DATE_FIELD = "created_at"
#: One random token per confirmation page, used as the operation's idempotency key.
CONFIRM_TOKEN = "_bulk_token"
CONFIRM_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")


@dataclass(frozen=True)
class AdminBulkAction:
    """One admin action: which service action, with which fixed parameters."""

    name: str
    action_type: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    #: The button that confirms: a danger style for destructive actions.
    destructive: bool = False

    @property
    def hard_delete(self) -> bool:
        return self.action_type == "delete" and self.params.get("soft_delete") is False


# --- who may run what --------------------------------------------------------------------
def sees_every_session(user) -> bool:
    """Whether the session changelist shows every user's sessions (else only the user's)."""
    return user_may_act_on_others(user, "bulkops.view_session")


def may_run(user, spec: AdminBulkAction) -> bool:
    """DESIGN §4 applied to the changelist: the action is offered when the user may apply
    it to every row the changelist can show them — their own rows need no permission,
    everyone's need the action's model permission; hard delete always needs
    ``bulkops.hard_delete_session``."""
    if not (user.is_active and user.is_staff):
        return False
    if spec.hard_delete and not user.has_perm("bulkops.hard_delete_session"):
        return False
    permission = get_action(spec.action_type).permission
    return user_may_act_on_others(user, permission) or not sees_every_session(user)


# --- selection: the changelist's filter, or ids re-derived server-side ---------------------
def _date_hierarchy_range(params: dict[str, str]) -> tuple[str, str] | None:
    try:
        year = int(params.pop(f"{DATE_FIELD}__year"))
        month = int(params.pop(f"{DATE_FIELD}__month", 0)) or None
        day = int(params.pop(f"{DATE_FIELD}__day", 0)) or None
        start = datetime.datetime(year, month or 1, day or 1)
    except (KeyError, ValueError, OverflowError):
        return None
    if day:
        end = start + datetime.timedelta(days=1)
    elif month:
        end = (start + datetime.timedelta(days=32)).replace(day=1)
    else:
        end = start.replace(year=year + 1)
    tz = timezone.get_current_timezone()
    return (
        timezone.make_aware(start, tz).isoformat(),
        timezone.make_aware(end, tz).isoformat(),
    )


def changelist_filter(request: HttpRequest) -> dict[str, Any] | None:
    """Translate the session changelist's query string into a selection filter
    (DESIGN §5: status, search, created_after, created_before, owner, deleted); return
    None when some parameter has no exact equivalent."""
    params = {k: v for k, v in request.GET.items() if k not in NEUTRAL_PARAMS}
    if any(len(request.GET.getlist(k)) > 1 for k in params):
        return None
    result: dict[str, Any] = {}
    deleted = params.pop("deleted", None)
    if deleted is None:
        result["deleted"] = False
    elif deleted == "yes":
        result["deleted"] = True
    else:
        return None
    if "status__exact" in params:
        result["status"] = params.pop("status__exact")
    if "owner__id__exact" in params:
        owner = params.pop("owner__id__exact")
        if not owner.isdigit():
            return None
        result["owner"] = int(owner)
    if f"{DATE_FIELD}__year" in params:
        bounds = _date_hierarchy_range(params)
        if bounds is None:
            return None
        result["created_after"], result["created_before"] = bounds
    for lookup, key in (("gte", "created_after"), ("lt", "created_before")):
        value = params.pop(f"{DATE_FIELD}__{lookup}", None)
        if value is not None:
            if key in result:
                return None
            result[key] = value
    terms = list(smart_split(params.pop("q", "")))
    if len(terms) > 1:
        # The admin ANDs the words; the selection filter searches for the whole text.
        return None
    if terms:
        term = terms[0]
        if term[:1] in "\"'" and term[-1:] == term[:1]:
            term = unescape_string_literal(term)
        if term:
            result["search"] = term
    return None if params else result


def changelist_selection(
    request: HttpRequest, queryset: QuerySet[Session], act: BulkAction
) -> tuple[Selection, int]:
    """The selection for the rows the action was run on, and their number.

    Explicitly ticked rows are sent as ids (one page at most). "Select all N matching"
    (``select_across``) is sent as the changelist's filter when it maps exactly — the
    mapped filter must match the same number of rows in the action's scope — else as
    the matching ids read here, server-side: never one POST field per row. Raise
    ValidationError when nothing matches or more than the action's cap.
    """
    user = request.user
    if request.POST.get("select_across") not in ("1", "True", "true"):
        ids = list(queryset.order_by("pk").values_list("pk", flat=True))
        if not ids:
            raise ValidationError(_("None of the selected sessions can be shown any more."))
        return Selection(session_ids=ids), len(ids)
    count = queryset.count()
    cap = act.max_sessions
    if count > cap:
        raise ValidationError(
            _(
                "All %(count)d matching sessions were selected, but %(action)s takes at "
                "most %(cap)d at once. Narrow the filter and try again."
            )
            % {"count": count, "action": act.display_name.lower(), "cap": cap}
        )
    if not count:
        raise ValidationError(_("No sessions match the filter."))
    filters = changelist_filter(request)
    if filters is not None and not sees_every_session(user):
        filters["owner"] = user.pk
    if filters is not None:
        from bulkops.selectors import sessions_in_scope

        scoped = sessions_in_scope(user=user, action=act)
        matched = sessions_filter(scoped, filters=filters, deleted_default=act.filter_deleted)
        if matched.count() == count:
            return Selection(filter=filters), count
    return Selection(session_ids=list(queryset.order_by("pk").values_list("pk", flat=True))), count


def confirm_key(request: HttpRequest) -> str | None:
    """The idempotency key of this confirmation page's Confirm (one token per page)."""
    token = request.POST.get(CONFIRM_TOKEN, "")
    return f"admin-confirm:{token}" if CONFIRM_TOKEN_RE.fullmatch(token) else None


def _error_text(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return " ".join(m for msgs in exc.message_dict.values() for m in msgs)
    return " ".join(exc.messages)


# --- the two passes ------------------------------------------------------------------------
def confirmation_templates(modeladmin: ModelAdmin, spec: AdminBulkAction) -> list[str]:
    opts = modeladmin.opts
    return [
        f"admin/{opts.app_label}/{opts.model_name}/bulk_{spec.action_type}_confirmation.html",
        f"admin/{opts.app_label}/{opts.model_name}/bulk_confirmation.html",
        f"admin/{opts.app_label}/bulk_confirmation.html",
        "admin/bulk_confirmation.html",
    ]


def run_bulk_action(
    modeladmin: ModelAdmin, request: HttpRequest, queryset: QuerySet[Session], spec: AdminBulkAction
) -> HttpResponse | None:
    """Both passes of an admin bulk action; None sends the user back to the changelist."""
    user = request.user
    if not may_run(user, spec):
        raise PermissionDenied
    bound = CONFIRM_FORM_MARKER in request.POST
    form = BulkActionForm(
        request.POST if bound else None,
        action_type=spec.action_type,
        initial={"format": spec.params.get("format", "csv")},
    )
    params = {**spec.params, **form.action_params()}
    act = get_action(spec.action_type)(user=user, params=params)
    try:
        selection, count = changelist_selection(request, queryset, act)
        if request.POST.get("post") and form.is_valid():
            key = confirm_key(request)
            fingerprint = request_fingerprint(
                action=spec.action_type,
                payload={
                    "selection": asdict(selection),
                    "params": params,
                    "reason": form.audit_reason(),
                },
            )
            if key and (
                replay := operation_replay(user=user, idempotency_key=key, fingerprint=fingerprint)
            ):
                # Confirm sent twice (a double click, a resubmitted form): same operation.
                return HttpResponseRedirect(progress_url(replay))
            rate_limit_check(request=request, kind=spec.action_type)
            op = operation_create(
                user=user,
                action=spec.action_type,
                selection=selection,
                params=params,
                source=OperationSource.ADMIN,
                reason=form.audit_reason(),
                idempotency_key=key,
                fingerprint=fingerprint,
            )
            rate_limit_consume(request=request, kind=spec.action_type)
            modeladmin.message_user(
                request,
                ngettext(
                    "%(action)s of %(count)d session started.",
                    "%(action)s of %(count)d sessions started.",
                    op.total,
                )
                % {"action": spec.label, "count": op.total},
                messages.SUCCESS,
            )
            return HttpResponseRedirect(progress_url(op))
        rate_limit_check(request=request, kind="validate")
        result = operation_validate(
            user=user, action=spec.action_type, selection=selection, params=params
        )
        rate_limit_consume(request=request, kind="validate")
    except ValidationError as exc:
        modeladmin.message_user(request, _error_text(exc), messages.ERROR)
        return None
    except BulkOpsError as exc:
        # RateLimited, TooManyActiveOperations: a message, and nothing happened.
        modeladmin.message_user(request, exc.message, messages.ERROR)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        **confirmation_context(request, queryset, spec, result, selection, count),
        "title": _("%(action)s: confirm") % {"action": spec.label},
        "subtitle": None,
        "opts": modeladmin.opts,
        "form": form,
        "spec": spec,
        "confirm_marker": CONFIRM_FORM_MARKER,
        "confirm_token_name": CONFIRM_TOKEN,
        "confirm_token": secrets.token_urlsafe(24),
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
    spec: AdminBulkAction,
    result,
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
    return {
        "result": data,
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


# --- the operation pages ---------------------------------------------------------------------
def progress_url(op: BulkOperation) -> str:
    return reverse("admin:bulkops_bulkoperation_progress", args=[op.pk])


def operation_for(request: HttpRequest, operation_id: str) -> BulkOperation:
    """The operation if the user may see it (its owner, or a superuser); else 404."""
    qs = BulkOperation.objects.select_related("user")
    if not request.user.is_superuser:
        qs = qs.filter(user=request.user)
    return get_object_or_404(qs, pk=operation_id)


def download_available(op: BulkOperation) -> bool:
    return (
        op.action == "export"
        and op.status in ("completed", "partial")
        and bool(op.export_file)
        and not export_expired(op)
    )


def export_expired(op: BulkOperation) -> bool:
    return op.expires_at is not None and op.expires_at <= timezone.now()


def live_state(op: BulkOperation) -> dict[str, Any]:
    """The operation representation plus what the page shows beside it."""
    data = operation_representation(op)
    duration = data["duration_seconds"]
    data["rate"] = round(op.processed / duration, 1) if duration and op.processed else None
    data["download_link"] = export_download_link(op) if download_available(op) else None
    return data


def export_download_link(op: BulkOperation) -> str:
    """The contract's ``/api/download/<file>`` when the API serves it, else the admin's own
    download view (same rules: owner, 410 once expired)."""
    url = download_url(op.export_file)
    try:
        resolve(url)
    except Resolver404:
        return reverse("admin:bulkops_bulkoperation_download", args=[op.pk])
    return url


class OperationPages:
    """The progress page, its JSON, cancel, retry and download, for BulkOperationAdmin."""

    def __init__(self, modeladmin: ModelAdmin) -> None:
        self.modeladmin = modeladmin

    def progress(self, request: HttpRequest, operation_id: str) -> TemplateResponse:
        op = operation_for(request, operation_id)
        state = live_state(op)
        admin = self.modeladmin
        context = {
            **admin.admin_site.each_context(request),
            "title": _("%(action)s operation") % {"action": get_action(op.action).display_name},
            "subtitle": op.pk,
            "opts": admin.opts,
            "operation": op,
            "state": state,
            "action_label": action_label(op),
            "can_cancel": not op.is_finished
            and (op.user_id == request.user.pk or request.user.is_superuser),
            "can_retry": op.is_finished
            and op.user_id == request.user.pk
            and op.items.filter(outcome="failed").exclude(reason=reasons.NOT_FOUND).exists(),
            "status_url": reverse("admin:bulkops_bulkoperation_status", args=[op.pk]),
            "detail_url": reverse("admin:bulkops_bulkoperation_change", args=[op.pk]),
            "failed_items_url": reverse("admin:bulkops_bulkoperation_change", args=[op.pk])
            + "?outcome=failed#items",
            "ws_path": "/ws/bulk/",
            "expired": op.action == "export" and export_expired(op),
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

    def retry(self, request: HttpRequest, operation_id: str) -> HttpResponseRedirect:
        op = operation_for(request, operation_id)
        if op.user_id != request.user.pk:
            raise PermissionDenied
        try:
            rate_limit_check(request=request, kind="retry")
            new = operation_retry(operation=op, user=request.user, source=OperationSource.ADMIN)
            rate_limit_consume(request=request, kind="retry")
        except (BulkOpsError, ValidationError) as exc:
            text = exc.message if isinstance(exc, BulkOpsError) else _error_text(exc)
            self.modeladmin.message_user(request, text, messages.ERROR)
            return HttpResponseRedirect(progress_url(op))
        self.modeladmin.message_user(
            request,
            ngettext(
                "Retrying %(count)d failed session.",
                "Retrying %(count)d failed sessions.",
                new.total,
            )
            % {"count": new.total},
            messages.SUCCESS,
        )
        return HttpResponseRedirect(progress_url(new))

    def download(self, request: HttpRequest, operation_id: str) -> HttpResponse:
        op = operation_for(request, operation_id)
        if op.action != "export" or not op.export_file:
            raise Http404
        if export_expired(op):
            return HttpResponse(
                _("This export has expired; run the export again."),
                status=410,
                content_type="text/plain; charset=utf-8",
            )
        path = export_path(op.export_file)
        if op.status not in ("completed", "partial") or not path.is_file():
            raise Http404
        return FileResponse(open(path, "rb"), as_attachment=True, filename=op.export_file)

    def views(self) -> dict[str, Any]:
        return {
            "progress": self.progress,
            "status": self.status,
            "cancel": require_POST(self.cancel),
            "retry": require_POST(self.retry),
            "download": self.download,
        }


def action_label(op: BulkOperation) -> str:
    """A person's name for what the operation does (``Hard delete``, ``Export (JSON)``)."""
    if op.action == "delete":
        return _("Soft delete") if op.params.get("soft_delete", True) else _("Hard delete")
    if op.action == "export":
        return _("Export (%(format)s)") % {"format": str(op.params.get("format", "csv")).upper()}
    return get_action(op.action).display_name


def progress_link(op: BulkOperation) -> str:
    return format_html('<a href="{}">{}</a>', progress_url(op), _("Progress page"))
