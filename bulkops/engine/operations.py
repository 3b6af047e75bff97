"""An operation's life as users ask for it: create, retry, cancel (replays: ``engine.idempotency``).

``operation_create`` is the one way an operation starts (``operation_retry`` and
``operation_undo`` end in it): an idempotent replay is looked for first; then, in one
transaction under the user's row lock, the replay again (a twin request may have just
committed it), the rate limit, the selection, the drift token, the active cap, the
rows — and the run itself for a small operation (``engine.inline``) — and the rate
limit counts the request. Every interface makes that one call and gets a ``Started``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from bulkops import events
from bulkops.actions import reasons
from bulkops.conf import bulkops_settings
from bulkops.engine.drift import (
    selection_drift_check,
    selection_token_verify,
)
from bulkops.engine.eligibility import Partition, action_build, partition, selection_rows
from bulkops.engine.idempotency import Started, replayed, request_fingerprint
from bulkops.engine.inline import operation_run_inline, runs_inline
from bulkops.engine.inputs import clean_max_failures
from bulkops.engine.large.scope import LargeSelection
from bulkops.engine.large.start import large_insert, large_total
from bulkops.engine.outcomes import close_remaining, create_items, finalise
from bulkops.engine.pausing import paused_time
from bulkops.engine.queue import enqueue_operation
from bulkops.engine.selection import ItemsOf, Selection, selection_target
from bulkops.exceptions import OperationConflict, TooManyActiveOperations
from bulkops.models import (
    MAX_REASON_LENGTH,
    BulkOperation,
    ItemOutcome,
    OperationSource,
    OperationStatus,
)
from bulkops.ratelimits import RETRY, rate_limit_taken
from bulkops.selectors import active_operations_count

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from bulkops.actions.base import BulkAction


def clean_reason(reason: Any) -> str:
    """The audit reason: text of at most ``MAX_REASON_LENGTH`` characters, no NUL."""
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH or "\x00" in reason:
        raise ValidationError({"reason": f"At most {MAX_REASON_LENGTH} characters of text."})
    return reason


def _lock_user(user: AbstractBaseUser) -> None:
    """Inside the creating transaction: take the user's row lock (a no-op UPDATE — a row
    lock on PostgreSQL, the write lock on SQLite), so one user's concurrent creators run
    one after the other: the active cap holds under a burst, and a twin request with the
    same Idempotency-Key sees the operation the first one committed."""
    users, quote = get_user_model(), connection.ops.quote_name
    table, pk = quote(users._meta.db_table), quote(users._meta.pk.column)
    with connection.cursor() as cursor:  # plain SQL: the ORM's update() cost twice as much
        cursor.execute(f"UPDATE {table} SET {pk} = {pk} WHERE {pk} = %s", [user.pk])


def _check_active_cap(user: AbstractBaseUser) -> None:
    limit = bulkops_settings.MAX_ACTIVE_OPERATIONS_PER_USER
    if active_operations_count(user=user) >= limit:
        raise TooManyActiveOperations(
            f"You already have {limit} operations pending or running; "
            "wait for one to finish or cancel one.",
            retry_after=5,
        )


def operation_create(
    *,
    user: AbstractBaseUser,
    action: str,
    selection: Selection,
    params: dict[str, Any] | None = None,
    source: str = OperationSource.API,
    reason: str = "",
    idempotency_key: str | None = None,
    fingerprint: str = "",
    selection_token: str | None = None,
    max_failures: int | None = None,
    eligible_only: bool = False,
    rate_scope: str | None = None,
) -> Started:
    """Start an operation: create it, one pending item per id (a large one: its
    selection and slices, ``engine.large``) and its task in one transaction (or run it
    there: ``engine.inline``, at most ``BULKOPS_INLINE_MAX_SESSIONS``); ``Started``.

    ``rate_scope``: the budget the request counts against (an action type, ``retry``,
    ``undo``; every interface names one; None: not limited — the engine's own callers),
    checked under the user's row lock before anything is written and counted once the
    operation exists: a burst cannot pass it, a refused request is not counted.
    ``idempotency_key``: the operation the key already started for this very request
    is returned instead, ``replayed`` (also a twin's that committed a moment ago),
    neither checked nor counted. ``selection_token`` (``operation_validate``'s): created
    only when the selection still partitions as validated (``engine.drift``).
    ``max_failures`` (kept in ``params``): past that many failed items the operation
    stops at the next chunk boundary, the rest ``cancelled`` (``failure_threshold``).
    ``eligible_only``: ``_leave_out_previewed``.

    Raise ValidationError for bad input, RateLimited, SelectionTokenInvalid /
    SelectionTokenExpired / SelectionDrift, TooManyActiveOperations (the user's
    pending/running maximum), IdempotencyConflict on key reuse.
    """
    if replay := replayed(user, idempotency_key, fingerprint):
        return replay
    act = action_build(user=user, action=action, params=params or {})
    reason = clean_reason(reason)
    max_failures = clean_max_failures(max_failures)
    threshold = {} if max_failures is None else {"max_failures": max_failures}
    op = BulkOperation(
        user=user,
        action=act.action_type,
        params={**act.params, **threshold},
        source=source,
        reason=reason,
        idempotency_key=idempotency_key or None,
        request_fingerprint=fingerprint,
    )
    act.prepare(op)
    request = _Request(op, act, selection, selection_token, rate_scope, eligible_only)
    try:
        return _create_or_replay(request)
    except IntegrityError:
        if replay := replayed(user, idempotency_key, fingerprint):
            return replay
        raise


@dataclass(frozen=True)
class _Request:
    """An operation to create, as ``operation_create`` checked its input."""

    op: BulkOperation
    act: BulkAction
    selection: Selection
    selection_token: str | None
    rate_scope: str | None
    eligible_only: bool


def _create_or_replay(request: _Request) -> Started:
    """In one transaction under the user's lock: the operation a twin request with the
    same key committed meanwhile (before any check: a replay is never refused), or the
    rate limit, the selection, the drift check, the active cap, then the new operation
    with its items and its task (or its inline run), counted against the rate limit."""
    op, act, scope = request.op, request.act, request.rate_scope
    with transaction.atomic():
        _lock_user(op.user)
        if replay := replayed(op.user, op.idempotency_key, op.request_fingerprint):
            return replay
        with rate_limit_taken(user=op.user, scope=scope) if scope else nullcontext():
            target = selection_target(user=op.user, action=act, selection=request.selection)
            if isinstance(target, LargeSelection):
                op.total = _large_total(request, target)
            else:
                target = _checked_selection(request, target)
                op.total = len(target)
            _check_active_cap(op.user)
            op = _insert(op, target, act)
    return Started(op, replayed=False)


def _checked_selection(request: _Request, ids: list[str]) -> list[str]:
    """The drift check of ``selection_token`` and the ``eligible_only`` narrowing, on
    one partition of the selection read under the user's lock; return the ids to run."""
    act = request.act
    if not request.selection_token and not request.eligible_only:
        return ids  # an empty token is no token (the admin's field before a preview)
    part = partition(action=act, ids=ids, rows=selection_rows(action=act, ids=ids))
    if request.selection_token:
        expected = selection_token_verify(token=request.selection_token, action=act)
        selection_drift_check(expected=expected, action=act, ids=ids, part=part)
    if request.eligible_only:
        ids = _leave_out_previewed(request.op, part)
    return ids


def _large_total(request: _Request, target: LargeSelection) -> int:
    """A large selection's size, counted once (from the drift check's counts when the
    request carries validate's token); ``eligible_only`` is refused."""
    _refuse_eligible_only(request.eligible_only)
    token = request.selection_token
    expected = selection_token_verify(token=token, action=request.act) if token else None
    return large_total(action=request.act, selection=target, expected=expected)


def _refuse_eligible_only(eligible_only: bool) -> None:
    """A large operation has no previewed list to leave out (validate's are samples)."""
    if eligible_only:
        raise ValidationError(
            {
                "non_field_errors": "Running on the eligible sessions only is for selections "
                "within the per-operation cap; past it, run the operation on all of them."
            }
        )


#: Ids kept per reason in ``BulkOperation.excluded`` (the counts are complete).
EXCLUDED_SAMPLE = 20


def _leave_out_previewed(op: BulkOperation, part: Partition) -> list[str]:
    """``eligible_only`` (the admin's "run on the eligible sessions only"): the eligible
    ids, in selection order. What validate calls skipped or not eligible gets no item:
    it is counted in ``op.excluded`` (left out as previewed), so the operation's
    failures are only the unexpected ones. Nothing eligible: ValidationError."""
    if not part.eligible:
        raise ValidationError(
            {"non_field_errors": "No selected session is eligible: there is nothing to run."}
        )
    op.excluded = {
        kind: [
            {"reason": reason, "count": len(sids), "sample": sids[:EXCLUDED_SAMPLE]}
            for reason, sids in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ]
        for kind, groups in (("ineligible", part.failed), ("skipped", part.skipped))
        if groups
    }
    op.total = len(part.eligible)
    return part.eligible


def _insert(
    op: BulkOperation, target: list[str] | LargeSelection, act: BulkAction
) -> BulkOperation:
    """Write the operation and its items (a large one: its selection and slices, a task
    per slice); queue its task(s), or run it here when it is small enough (then return
    it as it finished)."""
    if isinstance(target, LargeSelection):
        enqueue_operation(op.id, tasks=large_insert(op, target, action=act))
        return op
    if runs_inline(op, act):  # it writes the operation and its items as they end
        return operation_run_inline(operation=op, session_ids=target)
    op.save(force_insert=True)
    create_items(op, target)
    enqueue_operation(op.id)
    return op


def retryable_items(operation: BulkOperation):
    """The items a retry would take: failed ones, except ``not_found`` (retrying those
    cannot succeed), in session-id order."""
    return (
        operation.items.filter(outcome=ItemOutcome.FAILED)
        .exclude(reason=reasons.NOT_FOUND)
        .order_by("session_id")
    )


def retry_refusal(operation: BulkOperation) -> str | None:
    """Why ``operation`` cannot be retried now (a sentence a person can act on), or None."""
    if not operation.is_finished:
        return "The operation is still running; retry it when it has finished."
    if not retryable_items(operation).exists():
        return "Nothing to retry: no item of this operation failed."
    return None


def operation_retry(
    *,
    operation: BulkOperation,
    user: AbstractBaseUser,
    source: str | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    selection_token: str | None = None,
    eligible_only: bool = False,
    rate_scope: str | None = None,
) -> Started:
    """Start a new operation over the failed items of a finished one (except
    ``not_found`` ones, which cannot succeed), as ``operation_create`` does (the
    idempotency key's request is "retry ``operation``"; interfaces pass
    ``rate_scope=ratelimits.RETRY``; ``fingerprint``, ``selection_token`` and
    ``eligible_only``: the admin's retry confirmation page). Raise OperationConflict
    when it is still running or nothing failed."""
    fingerprint = fingerprint or request_fingerprint(
        action=RETRY, payload={"operation_id": operation.pk}
    )
    if replay := replayed(user, idempotency_key, fingerprint):
        return replay
    refusal = retry_refusal(operation)
    if refusal:
        raise OperationConflict(refusal)
    failed = ItemsOf(operation.pk, ItemOutcome.FAILED, exclude_reasons=(reasons.NOT_FOUND,))
    return operation_create(
        user=user,
        action=operation.action,
        selection=Selection(items_of=failed),
        params=operation.params,
        source=source or operation.source,
        reason=f"Retry of {operation.id}",
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        max_failures=operation.params.get("max_failures"),
        selection_token=selection_token,
        eligible_only=eligible_only,
        rate_scope=rate_scope,
    )


def operation_cancel(*, operation: BulkOperation) -> BulkOperation:
    """Cancel a pending or paused operation at once, or ask a running one to stop at its
    next chunk boundary (remaining items end ``cancelled``); raise OperationConflict when
    finished."""
    with transaction.atomic():
        op = BulkOperation.objects.select_for_update(no_key=True).get(pk=operation.pk)
        if op.is_finished:
            raise OperationConflict(f"The operation has already finished ({op.status}).")
        if op.status in (OperationStatus.PENDING, OperationStatus.PAUSED):
            # The time it sat paused is not running time (duration_seconds).
            BulkOperation.objects.filter(pk=op.pk).update(
                paused_seconds=F("paused_seconds") + paused_time(op, timezone.now())
            )
            close_remaining(op, outcome=ItemOutcome.CANCELLED, reason=reasons.CANCELLED)
            finalise(op, status=OperationStatus.CANCELLED, error="Cancelled on request.")
        else:
            BulkOperation.objects.filter(pk=op.pk).update(
                cancel_requested=True, version=F("version") + 1
            )
        op.refresh_from_db()
    if op.status == OperationStatus.CANCELLED:
        transaction.on_commit(lambda: events.publish_operation(op, "bulk_operation_cancelled"))
    return op
