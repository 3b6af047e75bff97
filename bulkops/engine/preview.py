"""``operation_validate``: the eligibility partition of a selection; changes nothing.

Up to the action's cap every session is listed; past it (a large selection,
``engine.large``) the counts by outcome and by reason come from SQL and the lists hold
at most ``SAMPLES_PER_REASON`` sessions per reason (``lists_truncated``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bulkops.actions import reasons
from bulkops.engine.drift import SelectionSnapshot, selection_token_issue
from bulkops.engine.eligibility import READ_BATCH, action_build, partition, selection_rows
from bulkops.engine.large.counts import (
    INELIGIBLE,
    SKIPPED,
    eligible_sessions,
    large_counts,
    large_samples,
)
from bulkops.engine.large.scope import LargeSelection, large_cap_check
from bulkops.engine.selection import Selection, filter_data, selection_target
from bulkops.selectors import sessions_in_scope

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from bulkops.actions.base import BulkAction


@dataclass
class ValidationResult:
    action: str
    eligible: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    ineligible: list[dict[str, Any]]
    estimated_duration_seconds: float
    #: What the action adds (delete: ``{"cascade": {"exports": n}}``).
    extra: dict[str, Any] = field(default_factory=dict)
    #: Signed proof of this partition: an action given it runs only on the same one.
    selection_token: str = ""
    #: Past the cap: ``{eligible_count, skipped_count, ineligible_count}`` counted in
    #: SQL, the lists above being samples (``lists_truncated``); else None (their lengths).
    counts: dict[str, int] | None = None
    #: Past the cap: the skipped and ineligible sessions by reason (else from the lists).
    counts_by_reason: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        counts = self.counts or {
            "eligible_count": len(self.eligible),
            "ineligible_count": len(self.ineligible),
            "skipped_count": len(self.skipped),
        }
        by_reason = self.counts_by_reason
        if by_reason is None:
            by_reason = dict(sorted(Counter(e["reason"] for e in self.excluded()).items()))
        return {
            "action": self.action,
            **counts,
            "counts_by_reason": by_reason,
            "lists_truncated": self.counts is not None,
            "eligible": self.eligible,
            "eligible_ids": [e["session_id"] for e in self.eligible],
            "ineligible": self.ineligible,
            "skipped": self.skipped,
            "estimated_duration_seconds": self.estimated_duration_seconds,
            "selection_token": self.selection_token,
            **self.extra,
        }

    def excluded(self) -> list[dict[str, Any]]:
        return [*self.skipped, *self.ineligible]


def _in_request_order(groups: dict[str, list[str]], order: dict[str, int], *, message: bool):
    entries = [
        {"session_id": sid, "reason": reason}
        | ({"message": reasons.message_for(reason)} if message else {})
        for reason, sids in groups.items()
        for sid in sids
    ]
    return sorted(entries, key=lambda item: order[item["session_id"]])


def operation_validate(
    *,
    user: AbstractBaseUser,
    action: str,
    selection: Selection,
    params: dict[str, Any] | None = None,
) -> ValidationResult:
    """Partition the selection into eligible / skipped / ineligible, with a
    ``selection_token`` that binds it (``engine.drift``); change nothing. A filter that
    matches nothing is a valid question (zero counts). Past the cap, for a user who may
    run large operations, the counts come from SQL and the lists are samples. Raise
    ValidationError for a bad action, parameters or selection."""
    act = action_build(user=user, action=action, params=params or {})
    ids = selection_target(user=user, action=act, selection=selection, allow_empty=True)
    if isinstance(ids, LargeSelection):
        return _validate_large(action=act, selection=ids)
    rows = selection_rows(action=act, ids=ids)
    part = partition(action=act, ids=ids, rows=rows)
    titles = eligible_titles(action=act, ids=part.eligible)
    order = {sid: i for i, sid in enumerate(ids)}
    return ValidationResult(
        action=act.action_type,
        eligible=[
            {"session_id": sid, "title": titles.get(sid, ""), "status": rows[sid].status}
            for sid in part.eligible
        ],
        skipped=_in_request_order(part.skipped, order, message=False),
        ineligible=_in_request_order(part.failed, order, message=True),
        estimated_duration_seconds=act.estimated_seconds(len(ids)),
        extra=act.preview(part.eligible),
        selection_token=selection_token_issue(
            action=act, snapshot=SelectionSnapshot.of(ids=ids, part=part)
        ),
    )


def eligible_titles(*, action: BulkAction, ids: list[str]) -> dict[str, str]:
    """The titles of the eligible sessions, by id (read in batches)."""
    scope = sessions_in_scope(user=action.user, action=action)
    titles: dict[str, str] = {}
    for start in range(0, len(ids), READ_BATCH):
        batch = ids[start : start + READ_BATCH]
        titles.update(scope.filter(pk__in=batch).values_list("id", "title"))
    return titles


def _validate_large(*, action: BulkAction, selection: LargeSelection) -> ValidationResult:
    """A large selection's counts by part and reason (one ``GROUP BY``), at most
    ``SAMPLES_PER_REASON`` sessions per reason, and a token binding the filter and the
    counts; raise ValidationError past ``BULKOPS_MAX_LARGE_OPERATION_SESSIONS``."""
    counts = large_counts(action=action, sessions=selection.rows)
    large_cap_check(count=counts.total)
    samples = large_samples(action=action, sessions=selection.rows, counts=counts)
    lists: dict[str, list[dict[str, Any]]] = {SKIPPED: [], INELIGIBLE: []}
    for reason, rows in samples.items():
        if reason is None:
            continue
        message = (
            {"message": reasons.message_for(reason)} if reason not in action.skip_reasons else {}
        )
        lists[counts.part(reason)] += [
            {"session_id": sid, "reason": reason, **message} for sid, _, _ in rows
        ]
    parts = counts.by_part()
    eligible = eligible_sessions(action=action, sessions=selection.rows, counts=counts)
    return ValidationResult(
        action=action.action_type,
        eligible=[
            {"session_id": sid, "title": title, "status": status}
            for sid, title, status in samples.get(None, [])
        ],
        skipped=lists[SKIPPED],
        ineligible=lists[INELIGIBLE],
        estimated_duration_seconds=action.estimated_seconds(counts.total),
        extra=action.preview_matching(eligible),
        selection_token=selection_token_issue(
            action=action, snapshot=counts.snapshot(filter_data(selection.filter))
        ),
        counts={f"{part}_count": n for part, n in parts.items()},
        counts_by_reason=counts.by_reason(),
    )
