"""``operation_validate``: the eligibility partition of a selection; changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bulkops.actions import reasons
from bulkops.engine.drift import SelectionSnapshot, selection_token_issue
from bulkops.engine.eligibility import READ_BATCH, action_build, partition, selection_rows
from bulkops.engine.selection import Selection, selection_resolve
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "eligible_count": len(self.eligible),
            "ineligible_count": len(self.ineligible),
            "skipped_count": len(self.skipped),
            "eligible": self.eligible,
            "eligible_ids": [e["session_id"] for e in self.eligible],
            "ineligible": self.ineligible,
            "skipped": self.skipped,
            "estimated_duration_seconds": self.estimated_duration_seconds,
            "selection_token": self.selection_token,
            **self.extra,
        }


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
    matches nothing is a valid question (zero counts). Raise ValidationError for a bad
    action, parameters or selection."""
    act = action_build(user=user, action=action, params=params or {})
    ids = selection_resolve(user=user, action=act, selection=selection, allow_empty=True)
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
