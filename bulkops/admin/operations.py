"""The bulk operations: read-only, with the progress page and items by outcome."""

from __future__ import annotations

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Count
from django.urls import path
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from bulkops.actions.registry import registered_actions
from bulkops.admin.base import OwnRowsAdmin, with_cheap_dates
from bulkops.admin.pages import OperationPages, progress_url
from bulkops.admin.undo import UndoPages
from bulkops.models import BulkOperation, ItemOutcome
from bulkops.representations import duration_seconds, operation_label, progress_percent
from bulkops.selectors import operations_for_admin


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


@admin.register(BulkOperation)
class BulkOperationAdmin(OwnRowsAdmin):
    owner_attname = "user_id"
    list_display = (
        "id",
        "action_name",
        "user",
        "source",
        "status",
        "progress",
        "counts",
        "created_at",
        "duration",
    )
    list_filter = (ActionFilter, "status", "source")
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
        pages = {**OperationPages(self).views(), **UndoPages(self).views()}
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

    @admin.display(description=_("action"), ordering="action")
    def action_name(self, obj: BulkOperation) -> str:
        return operation_label(obj)

    @admin.display(description=_("progress"))
    def progress(self, obj: BulkOperation) -> str:
        percent = progress_percent(obj)
        return format_html(
            '<a href="{}" class="bulkops-mini-progress" title="{}">'
            '<progress max="100" value="{}"></progress> {}%</a>',
            progress_url(obj),
            _("Progress page"),
            percent,
            percent,
        )

    @admin.display(description=_("succeeded / skipped / failed of total"))
    def counts(self, obj: BulkOperation) -> str:
        return f"{obj.succeeded} / {obj.skipped} / {obj.failed} of {obj.total}"

    @admin.display(description=_("duration"))
    def duration(self, obj: BulkOperation) -> str:
        seconds = duration_seconds(obj)
        return "—" if seconds is None else f"{seconds:.1f} s"

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
        items = op.items.order_by("session_id")
        if outcome:
            items = items.filter(outcome=outcome)
        page = Paginator(items, self.items_per_page).get_page(request.GET.get("items_page"))
        counts = dict(op.items.values_list("outcome").annotate(n=Count("id")).order_by())
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
