"""``operation_undo``: a new operation that reverses the succeeded items of a finished one.

An operation may be undone when it has finished, its action can be undone (soft delete,
close, archive: ``bulkops.actions.undo.refusal``), it is not itself an undo, at least
one of its items succeeded, ``BULKOPS_UNDO_WINDOW_SECONDS`` have not passed since it
finished, and it has not been undone already — by an undo that is not ``failed`` or
``cancelled`` (after one of those, undo again: the sessions the stopped undo did
restore fail ``changed_since`` and stay as they are).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from bulkops import itemstore
from bulkops.actions import undo as undo_action
from bulkops.conf import bulkops_settings
from bulkops.engine.idempotency import Started, operation_replay, request_fingerprint
from bulkops.engine.operations import operation_create
from bulkops.engine.selection import ItemsOf, Selection
from bulkops.exceptions import OperationConflict
from bulkops.models import BulkOperation, ItemOutcome, OperationSource, OperationStatus

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

UNDO = undo_action.UndoAction.action_type


def undo_deadline(operation: BulkOperation) -> datetime.datetime | None:
    """The moment the operation can no longer be undone (None before it finished)."""
    if operation.finished_at is None:
        return None
    return operation.finished_at + datetime.timedelta(seconds=bulkops_settings.UNDO_WINDOW_SECONDS)


def undone_by(operation: BulkOperation) -> BulkOperation | None:
    """The undo that took (or is taking) this operation back: not failed nor cancelled."""
    return (
        BulkOperation.objects.filter(action=UNDO, params__undoes=operation.pk)
        .exclude(status__in=(OperationStatus.FAILED, OperationStatus.CANCELLED))
        .order_by("-created_at")
        .first()
    )


def undo_refusal(operation: BulkOperation, *, now: datetime.datetime | None = None) -> str | None:
    """Why ``operation`` cannot be undone now (a sentence a person can act on), or None."""
    never = undo_action.refusal(operation.action, operation.params)
    if never:
        return never
    if not operation.is_finished:
        return f"The operation is still {operation.status}; undo it once it has finished."
    deadline = undo_deadline(operation)
    if deadline is not None and (now or timezone.now()) >= deadline:
        return (
            "The undo window has passed: an operation can be undone for "
            f"{bulkops_settings.UNDO_WINDOW_SECONDS} s (BULKOPS_UNDO_WINDOW_SECONDS) after "
            "it finished."
        )
    if not itemstore.has_succeeded(operation):
        return "Nothing to undo: no item of this operation succeeded."
    previous = undone_by(operation)
    if previous is not None:
        return f"This operation was already undone by {previous.pk} ({previous.status})."
    return None


def operation_undo(
    *,
    operation: BulkOperation,
    user: AbstractBaseUser,
    source: str = OperationSource.API,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    eligible_only: bool = False,
    rate_scope: str | None = None,
) -> Started:
    """Start the undo of ``operation``: a new ``undo`` operation over its succeeded
    items, run by ``user`` within their scope (with ``eligible_only``, those still as the
    operation left them), as ``operation_create`` starts one (the idempotency key's
    request is "undo ``operation``" unless ``fingerprint`` says otherwise; interfaces
    pass ``rate_scope=ratelimits.UNDO``). Raise OperationConflict (nothing created) when
    it cannot be undone (``undo_refusal``).

    The undone operation's row is locked while the undo is created, so two undo
    requests at once start one undo (and a twin with the same key, let in after the
    first committed, finds it: a replay, not "already undone")."""
    fingerprint = fingerprint or request_fingerprint(
        action=UNDO, payload={"operation_id": operation.pk}
    )

    def replay() -> Started | None:
        found = idempotency_key and operation_replay(
            user=user, idempotency_key=idempotency_key, fingerprint=fingerprint
        )
        return Started(found, replayed=True) if found else None

    if started := replay():
        return started
    with transaction.atomic():
        locked = BulkOperation.objects.select_for_update().get(pk=operation.pk)
        if started := replay():
            return started
        refusal = undo_refusal(locked)
        if refusal:
            raise OperationConflict(refusal)
        return operation_create(
            user=user,
            action=UNDO,
            selection=Selection(items_of=ItemsOf(locked.pk, ItemOutcome.SUCCEEDED)),
            params={"undoes": locked.pk},
            source=source,
            reason=f"Undo of {locked.pk}",
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            eligible_only=eligible_only,
            rate_scope=rate_scope,
        )
