"""An operation's life as users ask for it: create, replay, retry, cancel."""

from __future__ import annotations

import datetime
import hashlib
import json
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
    SelectionSnapshot,
    selection_drift_check,
    selection_token_verify,
)
from bulkops.engine.eligibility import Partition, action_build, partition, selection_rows
from bulkops.engine.inputs import clean_max_failures
from bulkops.engine.outcomes import close_remaining, finalise
from bulkops.engine.pausing import paused_time
from bulkops.engine.queue import enqueue_operation
from bulkops.engine.selection import Selection, selection_resolve
from bulkops.exceptions import IdempotencyConflict, OperationConflict, TooManyActiveOperations
from bulkops.models import (
    MAX_REASON_LENGTH,
    BulkOperation,
    BulkOperationItem,
    ItemOutcome,
    OperationSource,
    OperationStatus,
)
from bulkops.selectors import active_operations_count

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from bulkops.actions.base import BulkAction


def request_fingerprint(*, action: str, payload: Any) -> str:
    """A stable hash of what was asked, to tell an idempotent replay from a new request."""
    canonical = json.dumps([action, payload], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def operation_replay(
    *, user: AbstractBaseUser, idempotency_key: str, fingerprint: str
) -> BulkOperation | None:
    """Return the operation this key already started (within the retention window), with
    ``replayed`` True, or None; raise IdempotencyConflict when the key was used for a
    different request."""
    horizon = timezone.now() - datetime.timedelta(seconds=bulkops_settings.IDEMPOTENCY_TTL_SECONDS)
    existing = BulkOperation.objects.filter(user=user, idempotency_key=idempotency_key).first()
    if existing is None:
        return None
    if existing.created_at < horizon:
        # Expired: the key is free again.
        BulkOperation.objects.filter(pk=existing.pk).update(idempotency_key=None)
        return None
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used with a different request body."
        )
    existing.replayed = True
    return existing


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
    users = get_user_model()
    key = users._meta.pk.name
    users.objects.filter(pk=user.pk).update(**{key: F(key)})


def _check_active_cap(user: AbstractBaseUser) -> None:
    limit = bulkops_settings.MAX_ACTIVE_OPERATIONS_PER_USER
    if active_operations_count(user=user) >= limit:
        raise TooManyActiveOperations(
            f"You already have {limit} operations pending or running; "
            "wait for one to finish or cancel one.",
            retry_after=5,
        )


def _create_items(op: BulkOperation, ids: list[str]) -> None:
    """One pending item per id: on PostgreSQL one ``INSERT … SELECT unnest(%s)`` with
    the ids as one array (one statement, nothing returned); elsewhere ``bulk_create``."""
    if connection.vendor != "postgresql":
        BulkOperationItem.objects.bulk_create(
            (BulkOperationItem(operation=op, session_id=sid) for sid in ids), batch_size=1000
        )
        return
    if not ids:
        return
    table = connection.ops.quote_name(BulkOperationItem._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (operation_id, session_id, outcome, reason, message, "
            "previous_status) SELECT %s, sid, %s, '', '', '' FROM unnest(%s::text[]) AS sid",
            [op.pk, ItemOutcome.PENDING, ids],
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
) -> BulkOperation:
    """Create the operation and one pending item per targeted id in one transaction, and
    enqueue its task in that same transaction (the task row commits with it).

    With ``idempotency_key``, the operation that key already started for this very
    request is returned instead (``replayed`` True; False on a new one) — also when a
    twin request committed it a moment ago: a replay neither counts toward nor is
    refused by the active cap. With ``selection_token`` (from ``operation_validate``),
    the operation is created only when the selection still partitions exactly as
    validated (``engine.drift``). ``max_failures`` (in ``params``): once more items than
    that failed, it stops at the next chunk boundary, the rest end ``cancelled``
    (``failure_threshold``), it ends ``failed``. ``eligible_only``: ``_leave_out_previewed``.

    Raise ValidationError for bad input, SelectionTokenInvalid for a token that is not
    this user's, action's and options', SelectionTokenExpired / SelectionDrift when what
    was validated no longer holds, TooManyActiveOperations when the user already has
    the maximum of pending/running operations, IdempotencyConflict on key reuse.
    """
    act = action_build(user=user, action=action, params=params or {})
    reason = clean_reason(reason)
    max_failures = clean_max_failures(max_failures)
    ids = selection_resolve(user=user, action=act, selection=selection)
    expected = (
        selection_token_verify(token=selection_token, action=act) if selection_token else None
    )
    threshold = {} if max_failures is None else {"max_failures": max_failures}
    op = BulkOperation(
        user=user,
        action=act.action_type,
        params={**act.params, **threshold},
        source=source,
        reason=reason,
        total=len(ids),
        idempotency_key=idempotency_key or None,
        request_fingerprint=fingerprint,
    )
    op.replayed = False
    act.prepare(op)
    try:
        return _create_or_replay(op, ids, act=act, expected=expected, eligible_only=eligible_only)
    except IntegrityError:
        replay = idempotency_key and operation_replay(
            user=user, idempotency_key=idempotency_key, fingerprint=fingerprint
        )
        if replay:
            return replay
        raise


def _create_or_replay(
    op: BulkOperation,
    ids: list[str],
    *,
    act: BulkAction,
    expected: SelectionSnapshot | None,
    eligible_only: bool,
) -> BulkOperation:
    """In one transaction under the user's lock: the operation a twin request with the
    same key committed meanwhile (before the drift check and the active cap: a replay
    is never refused), or the new operation with its items and task."""
    with transaction.atomic():
        _lock_user(op.user)
        replay = op.idempotency_key and operation_replay(
            user=op.user, idempotency_key=op.idempotency_key, fingerprint=op.request_fingerprint
        )
        if replay:
            return replay
        if expected is not None or eligible_only:
            part = partition(action=act, ids=ids, rows=selection_rows(action=act, ids=ids))
            if expected is not None:
                selection_drift_check(expected=expected, action=act, ids=ids, part=part)
            if eligible_only:
                ids = _leave_out_previewed(op, part)
        _check_active_cap(op.user)
        _insert(op, ids)
    return op


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


def _insert(op: BulkOperation, ids: list[str]) -> None:
    op.save(force_insert=True)
    _create_items(op, ids)
    enqueue_operation(op.id)


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
) -> BulkOperation:
    """Start a new operation over the failed items of a finished one (except
    ``not_found`` ones, which cannot succeed); raise OperationConflict when it is still
    running or nothing failed. ``selection_token`` and ``eligible_only`` as for
    ``operation_create`` (the admin's retry confirmation page)."""
    refusal = retry_refusal(operation)
    if refusal:
        raise OperationConflict(refusal)
    failed_ids = list(retryable_items(operation).values_list("session_id", flat=True))
    return operation_create(
        user=user,
        action=operation.action,
        selection=Selection(session_ids=failed_ids),
        params=operation.params,
        source=source or operation.source,
        reason=f"Retry of {operation.id}",
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        max_failures=operation.params.get("max_failures"),
        selection_token=selection_token,
        eligible_only=eligible_only,
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
