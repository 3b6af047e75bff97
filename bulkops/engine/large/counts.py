"""What a large selection holds, counted in SQL: validate's counts by outcome and by
reason, a few samples per reason, and the snapshot its ``selection_token`` binds.

Eligibility stays the action's ``check(row)``. The matching sessions are counted in one
``GROUP BY`` over the columns ``check`` decides on for a selectable action — the status,
deleted or not, and (hard delete without cascade) whether the session has exports —
and ``check`` sorts each group: a handful of calls whatever the size, so the counts
agree with what the worker decides row by row (``tests/engine/test_large_counts.py``
compares them with the small partition for every action, status and deleted state).
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections import defaultdict
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING, Any

from django.db.models import BooleanField, Count, Exists, ExpressionWrapper, OuterRef, Q, QuerySet
from django.utils import timezone

from bulkops.actions.base import SessionRow
from bulkops.counting import count_at_most, planner_estimate
from bulkops.engine.drift import SelectionSnapshot
from bulkops.models import Session, SessionExport

if TYPE_CHECKING:
    from bulkops.actions.base import BulkAction

#: Sessions validate shows per reason (and of the eligible) past the cap.
SAMPLES_PER_REASON = 20
ELIGIBLE, SKIPPED, INELIGIBLE = "eligible", "skipped", "ineligible"


@dataclass(frozen=True)
class Group:
    """Matching sessions that share every column ``check`` reads, and its verdict."""

    status: str
    deleted: bool
    has_exports: bool
    count: int
    #: The reason ``check`` gives the group; None: eligible.
    reason: str | None

    def condition(self, *, with_exports: bool) -> Q:
        q = Q(status=self.status, deleted_at__isnull=not self.deleted)
        if with_exports:
            q &= Q(_has_exports=self.has_exports)
        return q


@dataclass(frozen=True)
class LargeCounts:
    """The matching sessions of a large selection, counted by the action's verdict."""

    groups: tuple[Group, ...]
    skip_reasons: frozenset[str]
    #: The groups were told apart by ``has_exports`` (an annotation on the sessions).
    with_exports: bool

    def part(self, reason: str | None) -> str:
        if reason is None:
            return ELIGIBLE
        return SKIPPED if reason in self.skip_reasons else INELIGIBLE

    def by_part(self) -> dict[str, int]:
        totals = dict.fromkeys((ELIGIBLE, SKIPPED, INELIGIBLE), 0)
        for group in self.groups:
            totals[self.part(group.reason)] += group.count
        return totals

    def by_reason(self) -> dict[str, int]:
        """Skipped and ineligible sessions by reason code (sorted by code)."""
        counts: dict[str, int] = defaultdict(int)
        for group in self.groups:
            if group.reason is not None:
                counts[group.reason] += group.count
        return dict(sorted(counts.items()))

    @property
    def total(self) -> int:
        return sum(group.count for group in self.groups)

    def snapshot(self, filters: dict[str, Any]) -> SelectionSnapshot:
        """What a ``selection_token`` binds past the cap: the filter and the counts by
        part and reason (never the ids), as a digest, and the counts."""
        parts = self.by_part()
        canonical = json.dumps(
            {"filter": filters, "eligible": parts[ELIGIBLE], "reasons": self.by_reason()},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return SelectionSnapshot(
            digest=hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest(),
            total=self.total,
            eligible_count=parts[ELIGIBLE],
            skipped_count=parts[SKIPPED],
            ineligible_count=parts[INELIGIBLE],
        )


def _annotated(action: BulkAction, sessions: QuerySet[Session]) -> QuerySet[Session]:
    qs = sessions.order_by().annotate(
        _deleted=ExpressionWrapper(Q(deleted_at__isnull=False), output_field=BooleanField())
    )
    if action.needs_exports:
        qs = qs.annotate(_has_exports=Exists(SessionExport.objects.filter(session=OuterRef("pk"))))
    return qs


def large_counts(*, action: BulkAction, sessions: QuerySet[Session]) -> LargeCounts:
    """Count ``sessions`` (one ``GROUP BY``) and let ``action.check`` sort each group."""
    qs = _annotated(action, sessions)
    keys = ["status", "_deleted", *(["_has_exports"] if action.needs_exports else [])]
    now = timezone.now()
    groups = []
    for row in qs.values(*keys).annotate(_n=Count("*")).order_by():
        has_exports = bool(row.get("_has_exports", False))
        probe = SessionRow(
            id="",
            owner_id=action.user.pk,
            status=row["status"],
            deleted_at=now if row["_deleted"] else None,
            has_exports=has_exports,
        )
        groups.append(
            Group(row["status"], row["_deleted"], has_exports, row["_n"], action.check(probe))
        )
    groups.sort(key=lambda g: (g.status, g.deleted, g.has_exports))
    return LargeCounts(tuple(groups), action.skip_reasons, action.needs_exports)


def large_samples(
    *, action: BulkAction, sessions: QuerySet[Session], counts: LargeCounts
) -> dict[str | None, list[tuple[str, str, str]]]:
    """At most ``SAMPLES_PER_REASON`` sessions ``(id, title, status)`` per reason (None:
    the eligible), the first in id order: one query per reason."""
    conditions: dict[str | None, Q] = {}
    for group in counts.groups:
        q = group.condition(with_exports=counts.with_exports)
        conditions[group.reason] = conditions[group.reason] | q if group.reason in conditions else q
    qs = _annotated(action, sessions)
    return {
        reason: list(
            qs.filter(q).order_by("id").values_list("id", "title", "status")[:SAMPLES_PER_REASON]
        )
        for reason, q in conditions.items()
    }


def eligible_sessions(
    *, action: BulkAction, sessions: QuerySet[Session], counts: LargeCounts
) -> QuerySet[Session]:
    """The eligible ones of ``sessions`` (an action's preview of what goes with them)."""
    eligible = [
        group.condition(with_exports=counts.with_exports)
        for group in counts.groups
        if group.reason is None
    ]
    if not eligible:
        return sessions.none()
    return _annotated(action, sessions).filter(reduce(operator.or_, eligible))


def count_up_to(queryset: QuerySet, limit: int) -> int:
    """``count_at_most``, but a plain ``COUNT`` when the planner expects ≤ ``limit``
    rows: PostgreSQL runs that on every core (a parallel index-only scan), where the
    bounded count's ``LIMIT`` keeps it on one (5.8M of 10M: 0.28–0.44 s against 0.53–0.87
    s). A low estimate costs a longer count, never a wrong answer."""
    estimate = planner_estimate(queryset)
    if estimate is None or estimate > limit:
        return count_at_most(queryset, limit)
    return queryset.count()
