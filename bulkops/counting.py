"""Counting lists that may hold millions of rows, and the paginator built on it.

A list a staff user sees may hold every session of the deployment: ``list_count``
counts exactly up to ``EXACT_COUNT_LIMIT`` and answers PostgreSQL's estimate beyond,
and ``EstimatingPaginator`` (the API's session list and the admin's changelists) serves
pages that do not depend on that count. ``count_at_most`` and ``planner_estimate`` are
the bounded count and the estimate the selections use too."""

from __future__ import annotations

import json

from django.core.exceptions import EmptyResultSet
from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

#: Up to this many rows a list that may estimate counts exactly (a bounded COUNT).
EXACT_COUNT_LIMIT = 10_000
#: From this offset on, an estimating list reads a page's keys before its rows.
DEEP_PAGE_OFFSET = 1_000
#: The largest OFFSET / LIMIT the databases take (a signed 64-bit integer).
MAX_OFFSET = 2**63 - 1


def count_at_most(queryset: QuerySet, limit: int) -> int:
    """``min(queryset.count(), limit + 1)``, reading at most ``limit + 1`` rows."""
    return queryset.order_by()[: limit + 1].count()


def planner_estimate(queryset: QuerySet) -> int | None:
    """The number of rows PostgreSQL's planner expects ``queryset`` to return (from the
    table statistics, as ``EXPLAIN`` shows it), or None on other databases."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    try:
        sql, params = queryset.order_by().values("pk").query.sql_with_params()
    except EmptyResultSet:  # .none(), or a filter that can match nothing
        return 0
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def list_count(queryset: QuerySet, *, may_estimate: bool) -> tuple[int, bool]:
    """``(count, is_estimate)``: exact, unless ``may_estimate`` on PostgreSQL and the
    planner expects more than ``EXACT_COUNT_LIMIT`` rows — then its estimate, without
    reading any row (even a bounded ``COUNT`` reads a whole bitmap of a common word).
    When the planner expects few rows they are counted, at most ``EXACT_COUNT_LIMIT + 1``
    (more: the estimate was low, and the count says at least that many)."""
    if not may_estimate:
        return queryset.count(), False
    estimate = planner_estimate(queryset)
    if estimate is None:
        return queryset.count(), False
    if estimate > EXACT_COUNT_LIMIT:
        return estimate, True
    bounded = count_at_most(queryset, EXACT_COUNT_LIMIT)
    if bounded <= EXACT_COUNT_LIMIT:
        return bounded, False
    return max(estimate, bounded), True


class EstimatingPaginator(Paginator):
    """A paginator whose count may be an estimate (``count_is_estimate``) when
    ``may_estimate``: see ``list_count``. Pages then do not depend on the count: a page
    is ``LIMIT page_size + 1 OFFSET …`` (the extra row says whether a next page exists),
    a page past the real end is 404, and pages past the estimate are still served while
    rows exist. The last page makes the count exact (rows before it + its rows)."""

    def __init__(self, object_list, per_page, *, may_estimate: bool = False, **kwargs) -> None:
        super().__init__(object_list, per_page, **kwargs)
        self.may_estimate = may_estimate
        self.count_is_estimate = False

    @cached_property
    def count(self) -> int:
        count, self.count_is_estimate = list_count(self.object_list, may_estimate=self.may_estimate)
        return count

    def validate_number(self, number):
        if not self.may_estimate:
            return super().validate_number(number)
        try:
            number = int(number)
        except (TypeError, ValueError) as exc:
            raise PageNotAnInteger("That page number is not an integer") from exc
        if number < 1:
            raise EmptyPage("That page number is less than 1")
        return number

    def page(self, number):
        if not self.may_estimate:
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        if bottom + self.per_page + 1 > MAX_OFFSET:
            # No table holds that many rows, and the OFFSET would overflow the database's
            # 64-bit integers (PostgreSQL: "bigint out of range").
            raise EmptyPage("That page contains no results")
        rows = self._rows(bottom, bottom + self.per_page + 1)
        if not rows and number > 1:
            raise EmptyPage("That page contains no results")
        more = len(rows) > self.per_page
        if not more and "count" not in self.__dict__:  # the last page: every row known
            self.__dict__["count"] = bottom + len(rows)
            self.count_is_estimate = False
        return LookaheadPage(rows[: self.per_page], number, self, more=more)

    def _rows(self, bottom: int, top: int) -> list:
        """Rows ``bottom…top`` in list order. Deep in the list, their primary keys first
        (an index-only walk past ``bottom`` rows), then those rows with their joins."""
        if bottom < DEEP_PAGE_OFFSET or not hasattr(self.object_list, "values_list"):
            return list(self.object_list[bottom:top])
        keys = list(self.object_list.values_list("pk", flat=True)[bottom:top])
        found = {row.pk: row for row in self.object_list.filter(pk__in=keys)}
        return [found[key] for key in keys if key in found]


class LookaheadPage(Page):
    def __init__(self, object_list, number, paginator, *, more: bool) -> None:
        super().__init__(object_list, number, paginator)
        self.more = more

    def has_next(self) -> bool:
        return self.more
