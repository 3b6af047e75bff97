"""What the admin's model pages share."""

from __future__ import annotations

import datetime

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.db.models import Max, Min, QuerySet
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from bulkops.counting import EstimatingPaginator
from bulkops.engine import FILTER_KEYS, MAX_OWNER_LENGTH, owner_users


def _periods(first: datetime.datetime, last: datetime.datetime, kind: str):
    """Every year, month or day from ``first`` to ``last`` (local time), as datetimes."""
    if kind == "year":
        return [first.replace(year=y, month=1, day=1) for y in range(first.year, last.year + 1)]
    if kind == "month":
        months = range(first.year * 12 + first.month - 1, last.year * 12 + last.month)
        return [first.replace(year=m // 12, month=m % 12 + 1, day=1) for m in months]
    days = (last.date() - first.date()).days
    return [first + datetime.timedelta(days=n) for n in range(days + 1)]


def short_moment(moment: datetime.datetime) -> str:
    """A changelist's date and time in a narrow column (``Dec 6, 14:02``; the year when
    it is not this one), the full date and time as its title."""
    local = timezone.localtime(moment)
    short = "M j, H:i" if local.year == timezone.localtime().year else "M j Y, H:i"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        local.isoformat(),
        date_format(local, "DATETIME_FORMAT"),
        date_format(local, short),
    )


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
    and a date hierarchy from the first and last row (``DateRangeQuerySet``) whose
    period is checked before Django builds it (``CheckedChangeList``)."""

    #: The attribute holding the owning user's id.
    owner_attname = "owner_id"
    show_full_result_count = False

    class Media:
        # The changelists' and change forms' own styles (badges, bars, columns).
        css = {"all": ("bulkops/bulkops.css",)}

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

    def get_changelist(self, request, **kwargs):
        return CheckedChangeList

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        return EstimatingPaginator(
            queryset,
            per_page,
            may_estimate=self.may_view_everyones(request),
            orphans=orphans,
            allow_empty_first_page=allow_empty_first_page,
        )


class OwnerFilter(admin.SimpleListFilter):
    """Rows of one owner, typed in as a user id or a username (``?owner=``), read as the
    API's ``owner`` filter reads it (``engine.owner_users``): listing every owner would
    read the whole table (``DISTINCT``) and print thousands of links.

    The parameter's former name, ``owner__id__exact``, is still read (bookmarks). A
    value no user can have, or one no user has, lists nothing and says why: a filter
    that cannot apply never widens to everyone's rows."""

    title = _("owner")
    parameter_name = "owner"
    legacy_parameter_name = "owner__id__exact"
    template = "admin/bulkops/owner_filter.html"

    def __init__(self, request, params, model, model_admin):
        legacy = params.pop(self.legacy_parameter_name, None)
        if legacy is not None:
            params.setdefault(self.parameter_name, legacy)
        super().__init__(request, params, model, model_admin)
        self.problem = owner_problem(self.value()) if self.value() else None
        if self.problem:
            messages.warning(request, self.problem)

    def expected_parameters(self):
        return [self.parameter_name, self.legacy_parameter_name]

    def lookups(self, request, model_admin):
        return []

    def has_output(self) -> bool:
        return True

    def choices(self, changelist):
        yield {
            "selected": not self.value(),
            "query_string": changelist.get_query_string(remove=self.expected_parameters()),
            "display": _("All"),
            "value": self.value() or "",
            "parameter_name": self.parameter_name,
            "hidden": [
                (k, v) for k, v in changelist.params.items() if k not in self.expected_parameters()
            ],
        }

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if self.problem:
            return queryset.none()
        users = owner_users(value)
        if not users.exists():
            messages.info(
                request, _("No user has the id or username “%(owner)s”.") % {"owner": value}
            )
            return queryset.none()
        return queryset.filter(owner__in=users)


def owner_problem(value: str) -> str | None:
    """Why ``value`` cannot name a user — the selection filter's ``owner`` rule
    (``FILTER_KEYS``) refuses it too — or None."""
    if FILTER_KEYS["owner"].valid(value):
        return None
    return _(
        "The owner filter takes a user id or a username (letters, digits and _.@+-, at "
        "most %(max)d); nothing matches what the address gave."
    ) % {"max": MAX_OWNER_LENGTH}


# --- the date hierarchy's period -----------------------------------------------------------
#: Years the date hierarchy lists: a period must begin and end within ``datetime``'s range
#: in every time zone (year 9999's December ends past ``datetime.max``).
FIRST_YEAR, LAST_YEAR = datetime.MINYEAR + 1, datetime.MAXYEAR - 1


def date_hierarchy_problem(field: str, params: dict[str, str]) -> str | None:
    """Why the date hierarchy's period in ``params`` (``<field>__year``, ``__month``,
    ``__day``, read as Django reads them) names no period that can be listed, or None."""
    year = params.get(f"{field}__year")
    if year is None:
        return None
    month, day = params.get(f"{field}__month"), params.get(f"{field}__day")
    try:
        start = datetime.date(
            int(year), 1 if month is None else int(month), 1 if day is None else int(day)
        )
        valid = FIRST_YEAR <= start.year <= LAST_YEAR
    except (ValueError, OverflowError):
        valid = False
    if valid:
        return None
    return _(
        "The date in the address is not a period that can be listed (years %(first)d to "
        "%(last)d, real months and days): the date filter was ignored."
    ) % {"first": FIRST_YEAR, "last": LAST_YEAR}


class CheckedChangeList(ChangeList):
    """A changelist that turns a date-hierarchy period no calendar has (or one past year
    9998, whose end Django cannot compute: ``OverflowError``) into a message and the
    changelist without its parameters (Django's "incorrect lookup" path), never a 500."""

    def get_filters(self, request):
        if self.date_hierarchy:
            problem = date_hierarchy_problem(self.date_hierarchy, self.params)
            if problem:
                messages.warning(request, problem)
                raise IncorrectLookupParameters(problem)
        return super().get_filters(request)
