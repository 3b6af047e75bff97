"""``operation_validate``: the eligibility partition of a selection; changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bulkops.actions import reasons
from bulkops.engine.eligibility import READ_BATCH, action_build, partition, session_rows
from bulkops.engine.selection import Selection, selection_resolve
from bulkops.selectors import sessions_in_scope

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


@dataclass
class ValidationResult:
    action: str
    eligible: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    ineligible: list[dict[str, Any]]
    estimated_duration_seconds: float
    #: What the action adds (delete: ``{"cascade": {"exports": n}}``).
    extra: dict[str, Any] = field(default_factory=dict)

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
    """Partition the selection into eligible / skipped / ineligible; change nothing.
    Raise ValidationError for a bad action, parameters or selection."""
    act = action_build(user=user, action=action, params=params or {})
    ids = selection_resolve(user=user, action=act, selection=selection)
    scope = sessions_in_scope(user=user, action=act)
    rows, titles = {}, {}
    for start in range(0, len(ids), READ_BATCH):
        batch = ids[start : start + READ_BATCH]
        rows.update(session_rows(action=act, scope=scope, ids=batch, lock=False))
        titles.update(scope.filter(pk__in=batch).values_list("id", "title"))
    part = partition(action=act, ids=ids, rows=rows)
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
    )
