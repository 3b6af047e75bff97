"""The bulk operations: read-only, with the progress page and items by outcome."""

from __future__ import annotations

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.urls import path
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from bulkops.actions.registry import registered_actions
from bulkops.admin.base import OwnRowsAdmin, short_moment, with_cheap_dates
from bulkops.admin.followup import RetryPages
from bulkops.admin.pages import OperationPages, progress_url, seconds_text
from bulkops.admin.undo import UndoPages
from bulkops.itemsummary import outcome_counts
from bulkops.models import (
    ACTIVE_OPERATION_STATUSES,
    BulkOperation,
    BulkOperationItem,
    ItemOutcome,
)
from bulkops.representations import duration_seconds, operation_label, progress_percent
from bulkops.selectors import operation_items, operations_for_admin

#: Characters of an operation id the list shows ("op-" and 8 of its 32 hex digits).
SHORT_ID = 11


class ActionFilter(admin.SimpleListFilter):
    """By action, from the registry (the list filter of a plain field would read every
    operation row for its ``DISTINCT`` values)."""

    title = _("action")
    parameter_name = "action__exact"

    def lookups(self, request, model_admin):
        return [(name, action.display_name) for name, action in registered_actions().items()]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset if value is None else queryset.filter(action=value)


class MineFilter(admin.SimpleListFilter):
    """The user's own operations, or only those still going (pending, running, paused):
    "what of mine is running?" without reading everyone's list."""

    title = _("user")
    parameter_name = "mine"

    def lookups(self, request, model_admin):
        return [("running", _("My running operations")), ("all", _("All my operations"))]

    def queryset(self, request, queryset):
        value = self.value()
        if value not in ("running", "all"):
            return queryset
        mine = queryset.filter(user=request.user)
        return mine.filter(status__in=ACTIVE_OPERATION_STATUSES) if value == "running" else mine


@admin.register(BulkOperation)
class BulkOperationAdmin(OwnRowsAdmin):
    owner_attname = "user_id"
    #: Fits 1366 px beside the navigation and the filters: the action with a short id
    #: (the link; the full id is its title), status with its bar, counts with what was
    #: left out as previewed, a short creation time with the duration under it.
    list_display = (
        "operation",
        "user",
        "source",
        "status_and_progress",
        "counts",
        "created",
    )
    list_display_links = ("operation",)
    list_filter = (MineFilter, ActionFilter, "status", "source")
    search_fields = ("id", "reason")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    fields = (
        "id",
        "action",
        "params",
        "user",
        "source",
        "reason",
        "status",
        "error",
        ("total", "processed", "succeeded", "skipped", "failed", "cancelled"),
        ("created_at", "started_at", "finished_at", "heartbeat_at"),
        ("export_file", "expires_at"),
        ("attempts", "version", "idempotency_key"),
    )
    readonly_fields = [
        f for group in fields for f in (group if isinstance(group, tuple) else (group,))
    ]
    change_form_template = "admin/bulkops/bulkoperation/change_form.html"
    items_per_page = 100

    def get_queryset(self, request):
        return with_cheap_dates(operations_for_admin(user=request.user))

    def get_urls(self):
        pages = {
            **OperationPages(self).views(),
            **RetryPages(self).views(),
            **UndoPages(self).views(),
        }
        wrap = self.admin_site.admin_view
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        custom = [
            path(
                f"<str:operation_id>/{name}/",
                wrap(view),
                name=f"{info}_{name}",
            )
            for name, view in pages.items()
        ]
        return custom + super().get_urls()

    # --- read-only: staff see their own operations, superusers everyone's ---------------
    def may_view_others(self, request, obj) -> bool:
        return request.user.is_superuser

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_list_display(self, request):
        """The user column only for those who see everyone's operations."""
        if self.may_view_everyones(request):
            return self.list_display
        return tuple(name for name in self.list_display if name != "user")

    @admin.display(description=_("operation"), ordering="action")
    def operation(self, obj: BulkOperation) -> str:
        return format_html(
            '<span class="bulkops-op-action">{}</span> <code class="bulkops-op-id" title="{}">'
            "{}…</code>",
            operation_label(obj),
            obj.pk,
            obj.pk[:SHORT_ID],
        )

    @admin.display(description=_("status"), ordering="status")
    def status_and_progress(self, obj: BulkOperation) -> str:
        """The badge and the bar in the progress page's colours, linked to that page."""
        percent = progress_percent(obj)
        return format_html(
            '<span class="bulkops-badge bulkops-status-{}">{}</span>'
            '<a href="{}" class="bulkops-mini-progress" title="{}">'
            '<progress class="bulkops-status-{}" max="100" value="{}"></progress> {}%</a>',
            obj.status,
            obj.get_status_display(),
            progress_url(obj),
            _("Progress page"),
            obj.status,
            percent,
            percent,
        )

    @admin.display(description=_("succeeded / skipped / failed of total"))
    def counts(self, obj: BulkOperation) -> str:
        counts = format_html(
            '<span class="bulkops-n-succeeded">{}</span> / {} / '
            '<span class="bulkops-n-failed{}">{}</span> of {}',
            obj.succeeded,
            obj.skipped,
            "" if obj.failed else " bulkops-zero",
            obj.failed,
            obj.total,
        )
        left_out = sum(g["count"] for kind in obj.excluded.values() for g in kind)
        if not left_out:
            return counts
        return format_html(
            '{}<br><span class="bulkops-quiet">{}</span>',
            counts,
            ngettext("%d left out as previewed", "%d left out as previewed", left_out) % left_out,
        )

    @admin.display(description=_("created, duration"), ordering="created_at")
    def created(self, obj: BulkOperation) -> str:
        seconds = duration_seconds(obj)
        if seconds is None:
            return short_moment(obj.created_at)
        return format_html(
            '{}<br><span class="bulkops-quiet" data-duration>{}</span>',
            short_moment(obj.created_at),
            seconds_text(seconds),
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        op = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if op is not None:
            extra.update(self.items_context(request, op))
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def items_context(self, request, op: BulkOperation) -> dict:
        """The operation's items, filterable by outcome (``?outcome=failed``), paginated."""
        outcome = request.GET.get("outcome", "")
        if outcome not in ItemOutcome.values:
            outcome = ""
        items = operation_items(operation=op, outcome=outcome or None)
        page = Paginator(items, self.items_per_page).get_page(request.GET.get("items_page"))
        if not isinstance(items, QuerySet):  # a large operation's rows, read from its chunks
            page.object_list = [BulkOperationItem(operation=op, **row) for row in page.object_list]
        counts = outcome_counts(op)
        return {
            "items_page": page,
            "items_outcome": outcome,
            "items_outcomes": [
                {"value": value, "label": label, "count": counts.get(value, 0)}
                for value, label in ItemOutcome.choices
            ],
            "items_total": sum(counts.values()),
            "progress_url": progress_url(op),
            "operation_label": operation_label(op),
        }
