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
from bulkops.engine.eligibility import action_build
from bulkops.engine.outcomes import close_remaining, finalise
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


def request_fingerprint(*, action: str, payload: Any) -> str:
    """A stable hash of what was asked, to tell an idempotent replay from a new request."""
    canonical = json.dumps([action, payload], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def operation_replay(
    *, user: AbstractBaseUser, idempotency_key: str, fingerprint: str
) -> BulkOperation | None:
    """Return the operation this key already started (within the retention window), or
    None; raise IdempotencyConflict when the key was used for a different request."""
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
    return existing


def clean_reason(reason: Any) -> str:
    """The audit reason: text of at most ``MAX_REASON_LENGTH`` characters, no NUL."""
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH or "\x00" in reason:
        raise ValidationError({"reason": f"At most {MAX_REASON_LENGTH} characters of text."})
    return reason


def _check_active_cap(user: AbstractBaseUser) -> None:
    """Inside the creating transaction: take the user's row lock first (a no-op
    UPDATE — a row lock on PostgreSQL, the write lock on SQLite), so concurrent creators
    of one user count one after the other and the cap holds under a burst."""
    users = get_user_model()
    key = users._meta.pk.name
    users.objects.filter(pk=user.pk).update(**{key: F(key)})
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
) -> BulkOperation:
    """Create the operation and one pending item per targeted id in one transaction, and
    enqueue its task in that same transaction (the task row commits with it).

    Raise ValidationError for bad input, TooManyActiveOperations when the user already
    has the maximum of pending/running operations, IdempotencyConflict on key reuse.
    """
    act = action_build(user=user, action=action, params=params or {})
    reason = clean_reason(reason)
    ids = selection_resolve(user=user, action=act, selection=selection)
    op = BulkOperation(
        user=user,
        action=act.action_type,
        params=act.params,
        source=source,
        reason=reason,
        total=len(ids),
        idempotency_key=idempotency_key or None,
        request_fingerprint=fingerprint,
    )
    act.prepare(op)
    try:
        with transaction.atomic():
            _check_active_cap(user)
            op.save(force_insert=True)
            _create_items(op, ids)
            enqueue_operation(op.id)
    except IntegrityError:
        replay = idempotency_key and operation_replay(
            user=user, idempotency_key=idempotency_key, fingerprint=fingerprint
        )
        if replay:
            return replay
        raise
    return op


def retryable_items(operation: BulkOperation):
    """The items a retry would take: failed ones, except ``not_found`` (retrying those
    cannot succeed), in session-id order."""
    return (
        operation.items.filter(outcome=ItemOutcome.FAILED)
        .exclude(reason=reasons.NOT_FOUND)
        .order_by("session_id")
    )


def operation_retry(
    *,
    operation: BulkOperation,
    user: AbstractBaseUser,
    source: str | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> BulkOperation:
    """Start a new operation over the failed items of a finished one (except
    ``not_found`` ones, which cannot succeed); raise OperationConflict when it is still
    running or nothing failed."""
    if not operation.is_finished:
        raise OperationConflict("The operation is still running; retry it when it has finished.")
    failed_ids = list(retryable_items(operation).values_list("session_id", flat=True))
    if not failed_ids:
        raise OperationConflict("Nothing to retry: no item of this operation failed.")
    return operation_create(
        user=user,
        action=operation.action,
        selection=Selection(session_ids=failed_ids),
        params=operation.params,
        source=source or operation.source,
        reason=f"Retry of {operation.id}",
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )


def operation_cancel(*, operation: BulkOperation) -> BulkOperation:
    """Cancel a pending operation at once, or ask a running one to stop at its next chunk
    boundary (remaining items end ``cancelled``); raise OperationConflict when finished."""
    with transaction.atomic():
        op = BulkOperation.objects.select_for_update().get(pk=operation.pk)
        if op.is_finished:
            raise OperationConflict(f"The operation has already finished ({op.status}).")
        if op.status == OperationStatus.PENDING:
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
