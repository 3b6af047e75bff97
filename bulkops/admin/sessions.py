"""The session changelist, with one admin action per registered bulk action variant."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.options import IS_POPUP_VAR
from django.core.exceptions import PermissionDenied
from django.db.models.functions import Length
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from bulkops.admin.actions import AdminBulkAction, admin_bulk_actions, may_run, run_bulk_action
from bulkops.admin.base import (
    CheckedChangeList,
    OwnerFilter,
    OwnRowsAdmin,
    short_moment,
    with_cheap_dates,
)
from bulkops.admin.selection import sees_every_session
from bulkops.models import Session
from bulkops.representations import operation_label
from bulkops.selectors import session_history


def bulk_admin_action(spec: AdminBulkAction):
    """An admin action (``delete_selected``-style) that runs ``spec`` in two passes."""

    def action(modeladmin, request, queryset):
        return run_bulk_action(modeladmin, request, queryset, spec)

    action.__name__ = spec.name
    if spec.variant.menu_label:
        description = _(spec.variant.menu_label)
    else:
        description = format_lazy("{label} selected %(verbose_name_plural)s", label=spec.label)
    return admin.action(description=description)(action)


class SortableByChangeList(CheckedChangeList):
    """Sorts by the columns ``sortable_by`` names only: Django leaves the header of any
    other unlinked but still sorts by it when ``o=`` asks (a forged URL)."""

    def get_ordering_field(self, field_name):
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)


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


@admin.register(Session)
class SessionAdmin(OwnRowsAdmin):
    #: Readable at 1366 px: ids on one line, titles with the room, deletion shown only
    #: on a deleted session (beside its status), a short creation time.
    list_display = ("id", "title", "owner", "state", "created", "size")
    list_filter = (
        "status",
        DeletedFilter,
        OwnerFilter,
        "created_at",
    )
    search_fields = ("id", "title")
    search_help_text = _("Search by id or title.")
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    #: Half Django's default: rendering a changelist row costs ~1 ms of template work
    #: whatever the table's size, so 100 rows were most of a 10M-session page's time;
    #: "select all N matching" still selects beyond the page.
    list_per_page = 50
    #: The bulk actions come from the registry (``get_actions``), one per admin variant.
    actions: list = []
    fieldsets = (
        (None, {"fields": ("id", "owner", "title", "status", "content", "metadata")}),
        (
            _("Lifecycle"),
            {"fields": ("created_at", "updated_at", "closed_at", "archived_at", "deleted_at")},
        ),
        (_("Archive"), {"fields": ("archive_original_size", "archive_compressed_size")}),
    )
    #: State goes through bulk operations only (eligibility, audit, events): the change
    #: form never edits who owns a session, its status or its lifecycle.
    readonly_fields = (
        "status",
        "created_at",
        "updated_at",
        "closed_at",
        "archived_at",
        "deleted_at",
        "archive_original_size",
        "archive_compressed_size",
    )
    raw_id_fields = ("owner",)
    change_form_template = "admin/bulkops/session/change_form.html"
    #: Operations listed on a session's page (newest first; the count is complete).
    HISTORY_LISTED = 20

    def get_queryset(self, request):
        qs = with_cheap_dates(
            super()
            .get_queryset(request)
            .defer("content", "archive_blob")
            .annotate(content_length=Length("content"))
        )
        if sees_every_session(request.user):
            return qs
        return qs.filter(owner=request.user)

    #: The columns everyone's sessions (millions) can be sorted by: those an index keeps
    #: in order. Sorting them by owner, status, deleted or size would sort every row.
    SORTABLE_ACROSS_EVERYONE = ("id", "title", "created")

    def get_sortable_by(self, request):
        if sees_every_session(request.user):
            return self.SORTABLE_ACROSS_EVERYONE
        return super().get_sortable_by(request)

    def get_changelist(self, request, **kwargs):
        return SortableByChangeList

    def get_list_filter(self, request):
        if sees_every_session(request.user):
            return self.list_filter
        return tuple(f for f in self.list_filter if f is not OwnerFilter)

    def get_readonly_fields(self, request, obj=None):
        """A new session: its id, owner and text. An existing one: its title and
        metadata only (its content too, unless archived: the archive holds it)."""
        if obj is None:
            return self.readonly_fields
        fixed = ("id", "owner", *self.readonly_fields)
        return (*fixed, "content") if obj.status == "archived" else fixed

    @admin.display(description=_("status"), ordering="status")
    def state(self, obj: Session) -> str:
        """The status, and "deleted" only when the session is (no mark on live rows)."""
        if obj.deleted_at is None:
            return obj.get_status_display()
        return format_html(
            '{} <span class="bulkops-deleted" title="{}">{}</span>',
            obj.get_status_display(),
            date_format(timezone.localtime(obj.deleted_at), "DATETIME_FORMAT"),
            _("deleted"),
        )

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, obj: Session) -> str:
        return short_moment(obj.created_at)

    @admin.display(description=_("size"), ordering="content_length")
    def size(self, obj: Session) -> str:
        if obj.archive_original_size is not None and obj.status == "archived":
            return _("%(original)s (archived: %(compressed)s)") % {
                "original": filesizeformat(obj.archive_original_size),
                "compressed": filesizeformat(obj.archive_compressed_size or 0),
            }
        return filesizeformat(obj.content_length)

    # --- permissions: own sessions need none, everyone's need the model's ---------------
    def may_view_others(self, request, obj) -> bool:
        return admin.ModelAdmin.has_view_permission(self, request, obj)

    def may_view_everyones(self, request) -> bool:
        return sees_every_session(request.user)

    def has_delete_permission(self, request, obj=None):
        # The admin's own delete removes rows: a hard delete, outside any operation.
        return super().has_delete_permission(request, obj) and request.user.has_perm(
            "bulkops.hard_delete_session"
        )

    def get_actions(self, request):
        """Every registered action's admin variants this user may run (``actions.may_run``)."""
        actions = super().get_actions(request)
        # Django's delete_selected would remove rows outside any bulk operation.
        actions.pop("delete_selected", None)
        if IS_POPUP_VAR in request.GET:
            return actions
        for spec in admin_bulk_actions().values():
            if may_run(request.user, spec):
                func = bulk_admin_action(spec)
                actions[spec.name] = (func, spec.name, func.short_description)
        return actions

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The session's page, with the bulk operations that touched it."""
        extra = dict(extra_context or {})
        session = self.get_object(request, object_id)
        if session is not None:
            history = session_history(
                user=request.user, session_id=session.pk, since=session.created_at
            )
            for item in history.items:
                item.label = operation_label(item.operation)
            extra.update(
                history=history.items[: self.HISTORY_LISTED],
                history_total=len(history.items),
                history_complete=history.complete,
                history_searched=history.searched,
            )
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def changelist_view(self, request, extra_context=None):
        if request.method == "POST":
            offered = self.get_actions(request)
            known = set(admin_bulk_actions()) | {"delete_selected"}
            if any(n in known and n not in offered for n in request.POST.getlist("action")):
                # A forged POST for an action this user is not offered.
                raise PermissionDenied
        return super().changelist_view(request, extra_context)
