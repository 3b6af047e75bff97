"""The Django admin: sessions with bulk actions, and the bulk operations they start.

Bulk actions go through ``bulkops.admin_views`` (confirmation page, then
``operation_create(source="admin")`` and the progress page); which actions a staff user
sees follows DESIGN §4 (``admin_views.may_run``).
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count
from django.db.models.functions import Length
from django.template.defaultfilters import filesizeformat
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from bulkops.admin_views import (
    AdminBulkAction,
    OperationPages,
    action_label,
    may_run,
    progress_url,
    run_bulk_action,
    sees_every_session,
)
from bulkops.models import BulkOperation, ItemOutcome, Session

BULK_ACTIONS = {
    spec.name: spec
    for spec in (
        AdminBulkAction("close_sessions", "close", _("Close")),
        AdminBulkAction("archive_sessions", "archive", _("Archive")),
        AdminBulkAction(
            "soft_delete_sessions", "delete", _("Soft delete"), {"soft_delete": True}, True
        ),
        AdminBulkAction(
            "hard_delete_sessions", "delete", _("Hard delete"), {"soft_delete": False}, True
        ),
        AdminBulkAction("restore_sessions", "restore", _("Restore")),
        AdminBulkAction("export_sessions_csv", "export", _("Export as CSV"), {"format": "csv"}),
        AdminBulkAction("export_sessions_json", "export", _("Export as JSON"), {"format": "json"}),
    )
}


def _bulk_admin_action(spec: AdminBulkAction):
    """An admin action (``delete_selected``-style) that runs ``spec`` in two passes."""

    def action(modeladmin, request, queryset):
        return run_bulk_action(modeladmin, request, queryset, spec)

    action.__name__ = spec.name
    description = format_lazy("{label} selected %(verbose_name_plural)s", label=spec.label)
    return admin.action(permissions=[spec.name], description=description)(action)


class DeletedFilter(admin.SimpleListFilter):
    """Soft-deleted sessions stay out of the changelist unless asked for."""

    title = _("deleted")
    parameter_name = "deleted"

    def lookups(self, request, model_admin):
        return [("yes", _("Deleted only")), ("all", _("All, deleted too"))]

    def choices(self, changelist):
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": _("Not deleted"),
        }
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value()
        if value == "all":
            return queryset
        return queryset.filter(deleted_at__isnull=value != "yes")


class OwnRowsAdmin(admin.ModelAdmin):
    """Every active staff user may open the module and view the rows they own."""

    #: The attribute holding the owning user's id.
    owner_attname = "owner_id"

    def may_view_others(self, request, obj) -> bool:
        raise NotImplementedError

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        if not self.has_module_permission(request):
            return False
        if obj is None or getattr(obj, self.owner_attname) == request.user.pk:
            return True
        return self.may_view_others(request, obj)


@admin.register(Session)
class SessionAdmin(OwnRowsAdmin):
    list_display = ("id", "title", "owner", "status", "deleted", "created_at", "size")
    list_filter = (
        "status",
        DeletedFilter,
        ("owner", admin.RelatedOnlyFieldListFilter),
        "created_at",
    )
    search_fields = ("id", "title")
    search_help_text = _("Search by id or title.")
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    list_per_page = 100
    actions = [_bulk_admin_action(spec) for spec in BULK_ACTIONS.values()]
    fieldsets = (
        (None, {"fields": ("id", "owner", "title", "status", "content", "metadata")}),
        (
            _("Lifecycle"),
            {"fields": ("created_at", "updated_at", "closed_at", "archived_at", "deleted_at")},
        ),
        (_("Archive"), {"fields": ("archive_original_size", "archive_compressed_size")}),
    )
    readonly_fields = (
        "updated_at",
        "closed_at",
        "archived_at",
        "deleted_at",
        "archive_original_size",
        "archive_compressed_size",
    )
    raw_id_fields = ("owner",)

    def get_queryset(self, request):
        qs = (
            super()
            .get_queryset(request)
            .defer("content", "archive_blob")
            .annotate(content_length=Length("content"))
        )
        if sees_every_session(request.user):
            return qs
        return qs.filter(owner=request.user)

    def get_list_filter(self, request):
        if sees_every_session(request.user):
            return self.list_filter
        return tuple(f for f in self.list_filter if not isinstance(f, tuple))

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:
            return ("id", *self.readonly_fields)
        return self.readonly_fields

    @admin.display(description=_("deleted"), boolean=True, ordering="deleted_at")
    def deleted(self, obj: Session) -> bool:
        return obj.deleted_at is not None

    @admin.display(description=_("size"), ordering="content_length")
    def size(self, obj: Session) -> str:
        if obj.archive_original_size is not None and obj.status == "archived":
            return _("%(original)s (archived: %(compressed)s)") % {
                "original": filesizeformat(obj.archive_original_size),
                "compressed": filesizeformat(obj.archive_compressed_size or 0),
            }
        return filesizeformat(obj.content_length)

    # --- permissions (DESIGN §4): own sessions need none, everyone's need the model's ---
    def may_view_others(self, request, obj) -> bool:
        return admin.ModelAdmin.has_view_permission(self, request, obj)

    def has_delete_permission(self, request, obj=None):
        # The admin's own delete removes rows: a hard delete, outside any operation.
        return super().has_delete_permission(request, obj) and request.user.has_perm(
            "bulkops.hard_delete_session"
        )

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Django's delete_selected would remove rows outside any bulk operation.
        actions.pop("delete_selected", None)
        return actions

    def changelist_view(self, request, extra_context=None):
        if request.method == "POST":
            offered = self.get_actions(request)
            known = set(BULK_ACTIONS) | {"delete_selected"}
            if any(n in known and n not in offered for n in request.POST.getlist("action")):
                # A forged POST for an action this user is not offered.
                raise PermissionDenied
        return super().changelist_view(request, extra_context)


def _permission_hook(spec: AdminBulkAction):
    """``has_<action>_permission``: the hook ``@admin.action(permissions=[name])`` calls."""

    def has_permission(self, request) -> bool:
        return may_run(request.user, spec)

    has_permission.__name__ = f"has_{spec.name}_permission"
    return has_permission


for _spec in BULK_ACTIONS.values():
    setattr(SessionAdmin, f"has_{_spec.name}_permission", _permission_hook(_spec))


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
    list_filter = ("action", "status", "source")
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
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        return qs.filter(user=request.user)

    def get_urls(self):
        pages = OperationPages(self).views()
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
        return action_label(obj)

    @admin.display(description=_("progress"))
    def progress(self, obj: BulkOperation) -> str:
        percent = 100 if obj.is_finished else (obj.processed * 100 // obj.total if obj.total else 0)
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
        if not obj.started_at:
            return "—"
        seconds = ((obj.finished_at or timezone.now()) - obj.started_at).total_seconds()
        return f"{seconds:.1f} s"

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
            "operation_label": action_label(op),
        }
