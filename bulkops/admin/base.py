"""What the admin's model pages share."""

from __future__ import annotations

import datetime

from django.contrib import admin
from django.db.models import Max, Min, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from bulkops.selectors import EstimatingPaginator


def _periods(first: datetime.datetime, last: datetime.datetime, kind: str):
    """Every year, month or day from ``first`` to ``last`` (local time), as datetimes."""
    if kind == "year":
        return [first.replace(year=y, month=1, day=1) for y in range(first.year, last.year + 1)]
    if kind == "month":
        months = range(first.year * 12 + first.month - 1, last.year * 12 + last.month)
        return [first.replace(year=m // 12, month=m % 12 + 1, day=1) for m in months]
    days = (last.date() - first.date()).days
    return [first + datetime.timedelta(days=n) for n in range(days + 1)]


class DateRangeQuerySet(QuerySet):
    """A changelist's queryset whose date hierarchy costs two index lookups: its years,
    months or days are those between the first and last row's date (``MIN``/``MAX``)
    instead of a ``DISTINCT`` over every matching row — a period in that range without
    rows is offered too (and shows an empty list)."""

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None, **kwargs):
        bounds = self.order_by().aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        first, last = (timezone.localtime(bounds[k], tzinfo) for k in ("first", "last"))
        start = first.replace(hour=0, minute=0, second=0, microsecond=0)
        periods = _periods(start, last, kind)
        return periods if order == "ASC" else periods[::-1]


def with_cheap_dates(queryset: QuerySet) -> QuerySet:
    """``queryset`` as a ``DateRangeQuerySet`` (same query, same database)."""
    return DateRangeQuerySet(model=queryset.model, query=queryset.query.chain(), using=queryset.db)


class OwnRowsAdmin(admin.ModelAdmin):
    """Every active staff user may open the module and view the rows they own.

    A changelist over millions of rows never counts them all: no unfiltered total
    (``show_full_result_count``), the filtered count estimated beyond 10,000 rows for
    those who see everyone's (``may_view_everyones``; the pagination says "about"),
    and a date hierarchy from the first and last row (``DateRangeQuerySet``)."""

    #: The attribute holding the owning user's id.
    owner_attname = "owner_id"
    show_full_result_count = False

    def may_view_others(self, request, obj) -> bool:
        raise NotImplementedError

    def may_view_everyones(self, request) -> bool:
        """Whether the changelist lists every user's rows (possibly millions)."""
        return self.may_view_others(request, None)

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        if not self.has_module_permission(request):
            return False
        if obj is None or getattr(obj, self.owner_attname) == request.user.pk:
            return True
        return self.may_view_others(request, obj)

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        return EstimatingPaginator(
            queryset,
            per_page,
            may_estimate=self.may_view_everyones(request),
            orphans=orphans,
            allow_empty_first_page=allow_empty_first_page,
        )


class OwnerIdFilter(admin.SimpleListFilter):
    """Rows of one owner by user id, typed in (``owner__id__exact``): listing every
    owner would read the whole table (``DISTINCT``) and print thousands of links."""

    title = _("owner")
    parameter_name = "owner__id__exact"
    template = "admin/bulkops/owner_id_filter.html"
    owner_field = "owner_id"

    def lookups(self, request, model_admin):
        return []

    def has_output(self) -> bool:
        return True

    def choices(self, changelist):
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": _("All"),
            "value": self.value() or "",
            "parameter_name": self.parameter_name,
            "hidden": [(k, v) for k, v in changelist.params.items() if k != self.parameter_name],
        }

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if not (value.isascii() and value.isdigit()) or int(value) >= 2**63:
            return queryset.none()
        return queryset.filter(**{self.owner_field: int(value)})
