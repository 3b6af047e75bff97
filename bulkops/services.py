"""The bulk-operation engine: validate, create, execute, cancel, retry (DESIGN.md §3–§7).

Every writer of operations — the API, the admin, the ``bulk`` command, the worker —
goes through these functions, so eligibility, limits and records are the same
everywhere. They raise Django/``bulkops.exceptions`` errors; callers shape responses.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from bulkops import events
from bulkops.actions import get_action, reasons
from bulkops.actions.base import ROW_FIELDS, BulkAction, SessionRow
from bulkops.actions.export import FILENAME_TEMPLATE
from bulkops.actions.sql import AnyOf, is_postgresql
from bulkops.conf import bulkops_settings
from bulkops.exceptions import (
    IdempotencyConflict,
    OperationConflict,
    TooManyActiveOperations,
)
from bulkops.models import (
    FINISHED_OPERATION_STATUSES,
    BulkOperation,
    BulkOperationItem,
    ItemOutcome,
    OperationSource,
    OperationStatus,
    Session,
    SessionExport,
    SessionStatus,
)
from bulkops.selectors import active_operations_count, sessions_in_scope

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger("bulkops.engine")

#: Matched with fullmatch: "$" would also accept a trailing newline.
SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
FILTER_KEYS = {"status", "search", "created_after", "created_before", "owner", "deleted"}
MAX_REASON_LENGTH = 500
#: Ids per query when reading rows for validate (well under SQLite's variable limit).
READ_BATCH = 2000


# --- selection ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """Exactly one of an explicit id list or a filter ("select all that match")."""

    session_ids: list[str] | None = None
    filter: dict[str, Any] | None = None


def _clean_session_ids(session_ids: Any, *, cap: int) -> list[str]:
    if not isinstance(session_ids, list):
        raise ValidationError({"session_ids": "Must be a list of session id strings."})
    if not session_ids:
        raise ValidationError({"session_ids": "Select at least one session."})
    if len(session_ids) > cap:
        raise ValidationError(
            {"session_ids": f"At most {cap} sessions per operation; got {len(session_ids)}."}
        )
    bad = [i for i, sid in enumerate(session_ids) if not isinstance(sid, str)]
    if bad:
        raise ValidationError(
            {"session_ids": f"Every id must be a string; positions {bad[:10]} are not."}
        )
    malformed = [sid for sid in session_ids if not SESSION_ID_RE.fullmatch(sid)]
    if malformed:
        shown = ", ".join(repr(s[:70]) for s in malformed[:5])
        raise ValidationError(
            {"session_ids": f"Malformed session ids ({len(malformed)}): {shown}."}
        )
    seen: set[str] = set()
    duplicates: list[str] = []
    for sid in session_ids:
        if sid in seen and sid not in duplicates:
            duplicates.append(sid)
        seen.add(sid)
    if duplicates:
        raise ValidationError(
            {"session_ids": f"Duplicate session ids: {', '.join(duplicates[:20])}."}
        )
    return list(session_ids)


def _parse_moment(name: str, value: Any) -> datetime.datetime:
    """An ISO 8601 date or date-time, as UTC (PostgreSQL refuses some legal offsets)."""
    if isinstance(value, str):
        try:
            moment = parse_datetime(value)
            if moment is None:
                day = parse_date(value)
                if day is not None:
                    moment = datetime.datetime.combine(day, datetime.time.min)
            if moment is not None:
                if timezone.is_naive(moment):
                    moment = timezone.make_aware(moment, datetime.UTC)
                return moment.astimezone(datetime.UTC)
        except (ValueError, OverflowError):
            pass  # well-formed but impossible, e.g. 2024-02-30
    raise ValidationError({f"filter.{name}": "Must be an ISO 8601 date or date-time."})


def sessions_filter(
    qs: QuerySet[Session], *, filters: dict[str, Any], deleted_default: bool | None
) -> QuerySet[Session]:
    """Apply a selection filter (``status, search, created_after, created_before, owner,
    deleted``) to ``qs``; raise ValidationError on unknown keys or bad values."""
    if not isinstance(filters, dict):
        raise ValidationError({"filter": "Must be an object."})
    unknown = sorted(set(filters) - FILTER_KEYS)
    if unknown:
        raise ValidationError(
            {
                "filter": f"Unknown filter keys: {', '.join(map(str, unknown))}. "
                f"Allowed: {', '.join(sorted(FILTER_KEYS))}."
            }
        )
    status = filters.get("status")
    if status is not None:
        statuses = status if isinstance(status, list) else [status]
        if not statuses or any(s not in SessionStatus.values for s in statuses):
            raise ValidationError(
                {"filter.status": f"Must be one of: {', '.join(SessionStatus.values)}."}
            )
        qs = qs.filter(status__in=statuses)
    search = filters.get("search")
    if search is not None:
        if not isinstance(search, str) or len(search) > 200 or "\x00" in search:
            raise ValidationError({"filter.search": "Must be text of at most 200 characters."})
        if search:
            qs = qs.filter(Q(title__icontains=search) | Q(id__icontains=search))
    if filters.get("created_after") is not None:
        qs = qs.filter(created_at__gte=_parse_moment("created_after", filters["created_after"]))
    if filters.get("created_before") is not None:
        qs = qs.filter(created_at__lt=_parse_moment("created_before", filters["created_before"]))
    owner = filters.get("owner")
    if owner is not None:
        if isinstance(owner, bool) or not isinstance(owner, (int, str)) or owner == "":
            raise ValidationError({"filter.owner": "Must be a user id or username."})
        if isinstance(owner, int) or (owner.isascii() and owner.isdigit()):
            qs = qs.filter(owner_id=int(owner))
        else:
            qs = qs.filter(owner__username=owner)
    deleted = filters.get("deleted", deleted_default)
    if deleted is not None:
        if not isinstance(deleted, bool):
            raise ValidationError({"filter.deleted": "Must be true or false."})
        qs = qs.filter(deleted_at__isnull=not deleted)
    return qs


def selection_resolve(
    *, user: AbstractBaseUser, action: BulkAction, selection: Selection
) -> list[str]:
    """Return the targeted session ids (order kept for id lists); raise ValidationError
    when the selection is malformed, empty or over the action's cap."""
    has_ids = selection.session_ids is not None
    has_filter = selection.filter is not None
    if has_ids == has_filter:
        raise ValidationError(
            {"non_field_errors": "Give exactly one of 'session_ids' or 'filter'."}
        )
    cap = action.max_sessions
    if has_ids:
        return _clean_session_ids(selection.session_ids, cap=cap)
    qs = sessions_filter(
        sessions_in_scope(user=user, action=action),
        filters=selection.filter or {},
        deleted_default=action.filter_deleted,
    )
    ids = list(qs.order_by("id").values_list("id", flat=True)[: cap + 1])
    if len(ids) > cap:
        count = qs.count()
        raise ValidationError(
            {
                "filter": f"The filter matches {count} sessions; the cap for "
                f"{action.action_type} is {cap}. Narrow the filter."
            },
            code="too_many",
        )
    if not ids:
        raise ValidationError({"filter": "No sessions match the filter."}, code="empty")
    return ids


# --- eligibility ---------------------------------------------------------------------------
@dataclass
class Partition:
    """Every requested id lands in exactly one of these (DESIGN: partitions, never drops)."""

    eligible: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    failed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def failed_count(self) -> int:
        return sum(len(v) for v in self.failed.values())

    @property
    def skipped_count(self) -> int:
        return sum(len(v) for v in self.skipped.values())


def _rows(
    *, action: BulkAction, scope: QuerySet[Session], ids: list[str], lock: bool
) -> dict[str, SessionRow]:
    qs = scope.filter(AnyOf("pk", ids)).order_by("pk")
    if lock and not action.read_only:
        # Locks in primary-key order, so overlapping operations cannot deadlock.
        qs = qs.select_for_update()
    with_exports: set[str] = set()
    if action.needs_exports:
        with_exports = set(
            SessionExport.objects.filter(AnyOf("session_id", ids))
            .values_list("session_id", flat=True)
            .distinct()
        )
    return {
        row[0]: SessionRow(*row, has_exports=row[0] in with_exports)
        for row in qs.values_list(*ROW_FIELDS)
    }


def _partition(*, action: BulkAction, ids: Iterable[str], rows: dict[str, SessionRow]) -> Partition:
    part = Partition()
    for sid in ids:
        row = rows.get(sid)
        reason = reasons.NOT_FOUND if row is None else action.check(row)
        if reason is None:
            part.eligible.append(sid)
        elif reason in action.skip_reasons:
            part.skipped[reason].append(sid)
        else:
            part.failed[reason].append(sid)
    return part


def _action_for(*, user: AbstractBaseUser, action: str, params: dict[str, Any]) -> BulkAction:
    try:
        action_cls = get_action(action)
    except KeyError:
        raise ValidationError({"action": f"Unknown action {action!r}."}) from None
    if not isinstance(params, dict):
        raise ValidationError({"params": "Must be an object."})
    return action_cls(user=user, params=action_cls.clean_params(params))


@dataclass
class ValidationResult:
    action: str
    eligible: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    ineligible: list[dict[str, Any]]
    estimated_duration_seconds: float
    cascade: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = {
            "action": self.action,
            "eligible_count": len(self.eligible),
            "ineligible_count": len(self.ineligible),
            "skipped_count": len(self.skipped),
            "eligible": self.eligible,
            "eligible_ids": [e["session_id"] for e in self.eligible],
            "ineligible": self.ineligible,
            "skipped": self.skipped,
            "estimated_duration_seconds": self.estimated_duration_seconds,
        }
        if self.cascade is not None:
            data["cascade"] = self.cascade
        return data


def operation_validate(
    *,
    user: AbstractBaseUser,
    action: str,
    selection: Selection,
    params: dict[str, Any] | None = None,
) -> ValidationResult:
    """Partition the selection into eligible / skipped / ineligible; change nothing."""
    act = _action_for(user=user, action=action, params=params or {})
    ids = selection_resolve(user=user, action=act, selection=selection)
    scope = sessions_in_scope(user=user, action=act)
    rows: dict[str, SessionRow] = {}
    titles: dict[str, str] = {}
    for start in range(0, len(ids), READ_BATCH):
        batch = ids[start : start + READ_BATCH]
        rows.update(_rows(action=act, scope=scope, ids=batch, lock=False))
        titles.update(scope.filter(pk__in=batch).values_list("id", "title"))
    part = _partition(action=act, ids=ids, rows=rows)
    order = {sid: i for i, sid in enumerate(ids)}
    ineligible = sorted(
        (
            {"session_id": sid, "reason": reason, "message": reasons.message_for(reason)}
            for reason, sids in part.failed.items()
            for sid in sids
        ),
        key=lambda item: order[item["session_id"]],
    )
    skipped = sorted(
        (
            {"session_id": sid, "reason": reason}
            for reason, sids in part.skipped.items()
            for sid in sids
        ),
        key=lambda item: order[item["session_id"]],
    )
    cascade = None
    if act.action_type == "delete":
        removed = 0
        if act.params["cascade_exports"] and part.eligible:
            removed = sum(
                SessionExport.objects.filter(
                    session_id__in=part.eligible[i : i + READ_BATCH]
                ).count()
                for i in range(0, len(part.eligible), READ_BATCH)
            )
        cascade = {"exports": removed}
    return ValidationResult(
        action=act.action_type,
        eligible=[
            {"session_id": sid, "title": titles.get(sid, ""), "status": rows[sid].status}
            for sid in part.eligible
        ],
        skipped=skipped,
        ineligible=ineligible,
        estimated_duration_seconds=act.estimated_seconds(len(ids)),
        cascade=cascade,
    )


# --- creating operations ----------------------------------------------------------------------
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


def _export_filename(operation: BulkOperation, fmt: str) -> str:
    return FILENAME_TEMPLATE.format(date=operation.created_at, operation_id=operation.id, ext=fmt)


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
    act = _action_for(user=user, action=action, params=params or {})
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH or "\x00" in reason:
        raise ValidationError({"reason": f"At most {MAX_REASON_LENGTH} characters of text."})
    ids = selection_resolve(user=user, action=act, selection=selection)
    limit = bulkops_settings.MAX_ACTIVE_OPERATIONS_PER_USER
    if active_operations_count(user=user) >= limit:
        raise TooManyActiveOperations(
            f"You already have {limit} operations pending or running; "
            "wait for one to finish or cancel one.",
            retry_after=5,
        )
    from bulkops.tasks import run_bulk_operation

    try:
        with transaction.atomic():
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
            if act.action_type == "export":
                op.export_file = _export_filename(op, act.params["format"])
                op.expires_at = op.created_at + datetime.timedelta(
                    seconds=bulkops_settings.EXPORT_RETENTION_SECONDS
                )
            op.save(force_insert=True)
            BulkOperationItem.objects.bulk_create(
                (BulkOperationItem(operation=op, session_id=sid) for sid in ids),
                batch_size=1000,
            )
            run_bulk_operation.enqueue(operation_id=op.id)
    except IntegrityError:
        if idempotency_key:
            replay = operation_replay(
                user=user, idempotency_key=idempotency_key, fingerprint=fingerprint
            )
            if replay is not None:
                return replay
        raise
    return op


def operation_retry(
    *,
    operation: BulkOperation,
    user: AbstractBaseUser,
    source: str | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> BulkOperation:
    """Start a new operation over the failed items of a finished one; raise
    OperationConflict when it is still running or nothing failed."""
    if not operation.is_finished:
        raise OperationConflict("The operation is still running; retry it when it has finished.")
    failed_ids = list(
        operation.items.filter(outcome=ItemOutcome.FAILED)
        .exclude(reason=reasons.NOT_FOUND)
        .order_by("session_id")
        .values_list("session_id", flat=True)
    )
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
            _close_remaining(op, outcome=ItemOutcome.CANCELLED, reason=reasons.CANCELLED)
            _finalise(op, status=OperationStatus.CANCELLED, error="Cancelled on request.")
        else:
            BulkOperation.objects.filter(pk=op.pk).update(
                cancel_requested=True, version=F("version") + 1
            )
        op.refresh_from_db()
    if op.status == OperationStatus.CANCELLED:
        transaction.on_commit(lambda: events.publish_operation(op, "bulk_operation_cancelled"))
    return op


# --- executing operations ---------------------------------------------------------------------
class AtomicRollback(Exception):
    """Raised inside an all-or-nothing operation to undo every chunk."""

    def __init__(self, failures: dict[str, list[str]]) -> None:
        super().__init__("atomic operation rolled back")
        self.failures = failures


#: Set by a worker that was asked to stop (SIGTERM): the executor finishes the chunk it
#: is in and leaves the operation to be resumed.
stop_requested = threading.Event()


def _final_status(op: BulkOperation) -> str:
    if op.failed and not (op.succeeded or op.skipped):
        return OperationStatus.FAILED
    if op.failed:
        return OperationStatus.PARTIAL
    return OperationStatus.COMPLETED


def _close_remaining(op: BulkOperation, *, outcome: str, reason: str) -> int:
    """End every still-pending item of ``op`` with ``outcome``/``reason``; count them."""
    n = BulkOperationItem.objects.filter(operation=op, outcome=ItemOutcome.PENDING).update(
        outcome=outcome, reason=reason, message=reasons.message_for(reason)
    )
    if n:
        counter = "cancelled" if outcome == ItemOutcome.CANCELLED else "failed"
        BulkOperation.objects.filter(pk=op.pk).update(
            processed=F("processed") + n, **{counter: F(counter) + n}
        )
    return n


def _finalise(op: BulkOperation, *, status: str | None = None, error: str = "") -> None:
    op.refresh_from_db()
    now = timezone.now()
    BulkOperation.objects.filter(pk=op.pk).update(
        status=status or _final_status(op),
        error=error,
        finished_at=now,
        heartbeat_at=now,
        started_at=op.started_at or now,
        version=F("version") + 1,
    )
    op.refresh_from_db()


def _record(op: BulkOperation, part: Partition, now: datetime.datetime) -> None:
    """Write item outcomes per outcome group (not per row) and bump the counters."""
    groups: list[tuple[str, str, list[str]]] = []
    if part.eligible:
        groups.append((ItemOutcome.SUCCEEDED, "", part.eligible))
    groups += [(ItemOutcome.SKIPPED, r, ids) for r, ids in part.skipped.items()]
    groups += [(ItemOutcome.FAILED, r, ids) for r, ids in part.failed.items()]
    for outcome, reason, ids in groups:
        BulkOperationItem.objects.filter(AnyOf("session_id", ids), operation=op).update(
            outcome=outcome, reason=reason, message=reasons.message_for(reason) if reason else ""
        )
    n_ok, n_skip, n_fail = len(part.eligible), part.skipped_count, part.failed_count
    BulkOperation.objects.filter(pk=op.pk).update(
        processed=F("processed") + n_ok + n_skip + n_fail,
        succeeded=F("succeeded") + n_ok,
        skipped=F("skipped") + n_skip,
        failed=F("failed") + n_fail,
        version=F("version") + 1,
        heartbeat_at=now,
    )


def _next_chunk(op: BulkOperation) -> list[str]:
    return list(
        BulkOperationItem.objects.filter(operation=op, outcome=ItemOutcome.PENDING)
        .order_by("session_id")
        .values_list("session_id", flat=True)[: bulkops_settings.CHUNK_SIZE]
    )


def _run_chunk(op: BulkOperation, act: BulkAction, scope: QuerySet[Session]) -> Partition | None:
    """One chunk in the caller's transaction: lock, re-check, apply, record. Return None
    when there is nothing left (or the operation was finished meanwhile)."""
    if is_postgresql():
        # A chunk's commit is a checkpoint, not a promise to anyone: if PostgreSQL
        # itself crashes, the chunk's session changes, item outcomes and counters are
        # lost together (one transaction) and the resumed run does them again. So it
        # need not wait for the WAL flush. The final commit (_finalise) does wait, and
        # flushing it flushes every earlier chunk too (WAL is written in order).
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
    status = (
        BulkOperation.objects.select_for_update().values_list("status", flat=True).get(pk=op.pk)
    )
    if status in FINISHED_OPERATION_STATUSES:
        return None
    ids = _next_chunk(op)
    if not ids:
        return None
    now = timezone.now()
    part = _partition(action=act, ids=ids, rows=_rows(action=act, scope=scope, ids=ids, lock=True))
    act.apply(ids=part.eligible, operation=op, now=now)
    _record(op, part, now)
    return part


class _Publisher:
    """Publishes after each committed chunk, coalescing progress to ~10 events/s."""

    MIN_INTERVAL = 0.1

    def __init__(self, op: BulkOperation, act: BulkAction) -> None:
        self.op = op
        self.act = act
        self.last = float("-inf")  # the first chunk always reports

    def chunk(self, part: Partition) -> None:
        touched = part.eligible
        if touched:
            events.publish_sessions_updated(self.op, touched, str(self.act.result_status))
        now = time.monotonic()
        if now - self.last >= self.MIN_INTERVAL:
            self.last = now
            self.op.refresh_from_db()
            events.publish_operation(self.op, "bulk_operation_progress")


FINAL_EVENTS = {
    OperationStatus.COMPLETED: "bulk_operation_completed",
    OperationStatus.PARTIAL: "bulk_operation_completed",
    OperationStatus.FAILED: "bulk_operation_failed",
    OperationStatus.CANCELLED: "bulk_operation_cancelled",
}


def _start(operation_id: str) -> tuple[BulkOperation, bool] | None:
    """Claim the operation for this execution; return (op, first_attempt) or None when
    there is nothing to do (finished) or it crashed too often (then it is failed)."""
    with transaction.atomic():
        op = BulkOperation.objects.select_for_update().filter(pk=operation_id).first()
        if op is None or op.is_finished:
            return None
        if op.attempts >= bulkops_settings.MAX_ATTEMPTS:
            _close_remaining(op, outcome=ItemOutcome.FAILED, reason=reasons.INTERNAL_ERROR)
            _finalise(
                op,
                status=OperationStatus.FAILED,
                error=f"Gave up after {op.attempts} attempts: the worker running it "
                "stopped without finishing each time.",
            )
            transaction.on_commit(lambda: events.publish_operation(op, "bulk_operation_failed"))
            return None
        first = op.attempts == 0
        now = timezone.now()
        act = get_action(op.action)
        if act.read_only and not first:
            # A read-only action (export) keeps nothing between attempts: start over.
            BulkOperationItem.objects.filter(operation=op).update(
                outcome=ItemOutcome.PENDING, reason="", message=""
            )
            BulkOperation.objects.filter(pk=op.pk).update(
                processed=0, succeeded=0, skipped=0, failed=0, cancelled=0
            )
        BulkOperation.objects.filter(pk=op.pk).update(
            status=OperationStatus.RUNNING,
            attempts=F("attempts") + 1,
            started_at=op.started_at or now,
            heartbeat_at=now,
            version=F("version") + 1,
        )
        op.refresh_from_db()
    return op, first


def _should_stop(op: BulkOperation) -> str | None:
    """Between chunks: 'cancelled', 'timeout', 'shutdown' or None."""
    fresh = BulkOperation.objects.filter(pk=op.pk).values("cancel_requested", "started_at").get()
    if fresh["cancel_requested"]:
        return "cancelled"
    limit = bulkops_settings.OPERATION_TIMEOUT_SECONDS
    if fresh["started_at"] and (timezone.now() - fresh["started_at"]).total_seconds() > limit:
        return "timeout"
    if stop_requested.is_set():
        return "shutdown"
    return None


def operation_execute(
    *, operation_id: str, should_stop: Callable[[], bool] | None = None
) -> BulkOperation | None:
    """Run the operation's pending items in chunks until done, cancelled or timed out.

    Each chunk is one transaction (all chunks one transaction when ``atomic``). Only
    ``pending`` items are processed, so running this again — after a crash, or twice at
    once — never applies an item twice. Return the operation, or None if it does not
    exist.
    """
    started = _start(operation_id)
    if started is None:
        return BulkOperation.objects.filter(pk=operation_id).first()
    op, first = started
    if first:
        events.publish_operation(op, "bulk_operation_started")
    act = get_action(op.action)(user=op.user, params=op.params)
    scope = sessions_in_scope(user=op.user, action=act)
    publisher = _Publisher(op, act)
    try:
        act.begin(op)
        stop = (
            _execute_atomic(op, act, scope)
            if act.atomic
            else _execute_chunks(op, act, scope, publisher, should_stop)
        )
        if stop == "shutdown":
            logger.info("operation %s left to resume after worker shutdown", op.pk)
            return op
        with transaction.atomic():
            if stop in ("cancelled", "timeout"):
                act.abort(op)
                reason = reasons.CANCELLED if stop == "cancelled" else reasons.TIMEOUT
                _close_remaining(op, outcome=ItemOutcome.CANCELLED, reason=reason)
                message = (
                    "Cancelled on request."
                    if stop == "cancelled"
                    else f"timeout: stopped after {bulkops_settings.OPERATION_TIMEOUT_SECONDS} s."
                )
                _finalise(op, status=OperationStatus.CANCELLED, error=message)
            elif stop == "atomic_rollback":
                act.abort(op)
                _finalise(op, status=OperationStatus.FAILED, error=op.error)
            else:
                op.refresh_from_db()
                if not op.is_finished:
                    act.finish(op)
                    _finalise(op)
    except Exception as exc:
        logger.exception("operation %s stopped on an internal error", op.pk)
        act.abort(op)
        with transaction.atomic():
            _close_remaining(op, outcome=ItemOutcome.FAILED, reason=reasons.INTERNAL_ERROR)
            _finalise(
                op,
                status=OperationStatus.FAILED,
                error=f"Internal error ({type(exc).__name__}); sessions already processed "
                "keep their outcome, the rest were not touched.",
            )
    op.refresh_from_db()
    events.publish_operation(op, FINAL_EVENTS[op.status])
    return op


def _execute_chunks(op, act, scope, publisher, should_stop) -> str | None:
    while True:
        stop = _should_stop(op)
        if stop is None and should_stop is not None and should_stop():
            stop = "shutdown"
        if stop:
            return stop
        with transaction.atomic():
            part = _run_chunk(op, act, scope)
        if part is None:
            return None
        publisher.chunk(part)


def _execute_atomic(op, act, scope) -> str | None:
    """All chunks in one transaction; any failed item undoes every change."""
    failures: dict[str, list[str]] = defaultdict(list)
    try:
        with transaction.atomic():
            while True:
                part = _run_chunk(op, act, scope)
                if part is None:
                    break
                for reason, ids in part.failed.items():
                    failures[reason].extend(ids)
            if failures:
                raise AtomicRollback(failures)
    except AtomicRollback:
        pass
    else:
        return None
    with transaction.atomic():
        culprits = 0
        for reason, ids in failures.items():
            culprits += len(ids)
            BulkOperationItem.objects.filter(operation=op, session_id__in=ids).update(
                outcome=ItemOutcome.FAILED, reason=reason, message=reasons.message_for(reason)
            )
        _close_remaining(op, outcome=ItemOutcome.FAILED, reason=reasons.ATOMIC_ROLLBACK)
        BulkOperation.objects.filter(pk=op.pk).update(
            processed=op.total, failed=op.total, succeeded=0, skipped=0
        )
        op.error = (
            f"All-or-nothing operation rolled back: {culprits} of {op.total} sessions "
            "could not be processed; nothing was changed."
        )
    return "atomic_rollback"


# --- crash safety: reaper, hand-off -------------------------------------------------------
#: What a task row left RUNNING by a dead worker is marked failed with.
WORKER_LOST = "bulkops.services.WorkerLost"


def _operation_tasks(operation_id: str):
    """The queue's rows for ``run_bulk_operation(operation_id=…)``."""
    from django_tasks_db.models import DBTaskResult

    from bulkops.tasks import run_bulk_operation

    return DBTaskResult.objects.filter(
        task_path=run_bulk_operation.module_path,
        args_kwargs__kwargs__operation_id=operation_id,
    )


def operation_reap_stale(
    *, stale_after: float | None = None, now: datetime.datetime | None = None
) -> list[str]:
    """Enqueue ``run_bulk_operation`` again for every operation whose worker is gone;
    return their ids.

    Gone means: ``running`` with a heartbeat (bumped by every chunk) older than
    ``stale_after`` seconds (default ``BULKOPS_STALE_AFTER_SECONDS``), or ``pending``
    for that long while no task row is queued for it (the task failed or was removed
    before the operation started). An operation whose task is still queued, or was
    claimed within the window, is left alone; task rows a dead worker left ``RUNNING``
    (django-tasks-db has no lease) are marked failed. The resumed run processes only
    pending items and counts the attempt, so an operation that keeps killing its workers
    fails after ``BULKOPS_MAX_ATTEMPTS``. Safe to run from many workers at once: each
    operation is claimed under its row lock and its heartbeat is bumped when enqueued.
    """
    from django_tasks import TaskResultStatus

    from bulkops.tasks import run_bulk_operation

    now = now or timezone.now()
    seconds = bulkops_settings.STALE_AFTER_SECONDS if stale_after is None else stale_after
    threshold = now - datetime.timedelta(seconds=seconds)
    quiet = Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=threshold)
    candidates = list(
        BulkOperation.objects.filter(
            Q(status=OperationStatus.RUNNING)
            | Q(status=OperationStatus.PENDING, created_at__lt=threshold),
            quiet,
        )
        .order_by("created_at")
        .values_list("pk", flat=True)
    )
    reaped: list[str] = []
    for operation_id in candidates:
        with transaction.atomic():
            # A live worker holds this lock for the whole of each chunk: skip, not wait.
            op = (
                BulkOperation.objects.select_for_update(skip_locked=True)
                .filter(pk=operation_id)
                .filter(
                    Q(status=OperationStatus.RUNNING)
                    | Q(status=OperationStatus.PENDING, created_at__lt=threshold),
                    quiet,
                )
                .first()
            )
            if op is None:
                continue
            tasks = _operation_tasks(op.pk)
            if tasks.filter(status=TaskResultStatus.READY).exists():
                continue
            if tasks.filter(status=TaskResultStatus.RUNNING, started_at__gte=threshold).exists():
                continue
            lost = tasks.filter(status=TaskResultStatus.RUNNING).update(
                status=TaskResultStatus.FAILED,
                finished_at=now,
                exception_class_path=WORKER_LOST,
                traceback=f"The worker stopped beating for over {seconds:g} s; "
                "the operation was enqueued again by the reaper.",
            )
            BulkOperation.objects.filter(pk=op.pk).update(heartbeat_at=now)
            run_bulk_operation.enqueue(operation_id=op.pk)
            reaped.append(op.pk)
            logger.warning(
                "operation %s (%s, attempt %d, %d task rows lost) enqueued again by the reaper",
                op.pk,
                op.status,
                op.attempts,
                lost,
            )
    return reaped


def operation_hand_off(*, operation_id: str) -> bool:
    """After a graceful worker shutdown stopped the operation between chunks (SIGTERM),
    enqueue it again at once so another worker resumes it; the attempt is given back, as
    nothing crashed. Return False when the operation is not running (e.g. finished)."""
    from bulkops.tasks import run_bulk_operation

    with transaction.atomic():
        op = (
            BulkOperation.objects.select_for_update()
            .filter(pk=operation_id, status=OperationStatus.RUNNING)
            .first()
        )
        if op is None:
            return False
        BulkOperation.objects.filter(pk=op.pk).update(
            attempts=max(op.attempts - 1, 0), heartbeat_at=timezone.now()
        )
        run_bulk_operation.enqueue(operation_id=op.pk)
    logger.info("operation %s handed off to the next worker", operation_id)
    return True


# --- cleanup ----------------------------------------------------------------------------------
@dataclass
class CleanupResult:
    export_files: int = 0
    operations: int = 0
    task_results: int = 0


def operations_cleanup(
    *,
    now: datetime.datetime | None = None,
    retention_days: int | None = None,
    task_results_after: datetime.timedelta = datetime.timedelta(days=1),
    dry_run: bool = False,
) -> CleanupResult:
    """Remove what has served its time (DESIGN.md §7.4) and count it:

    - export files past ``expires_at`` (the download answers 410 from then on), and
      ``.part`` files older than a day (an export interrupted for good);
    - finished operations (with their items and export files) finished more than
      ``retention_days`` (default ``BULKOPS_OPERATION_RETENTION_DAYS``) ago;
    - finished task results older than ``task_results_after`` (queued and running
      ones are never touched: the reaper reads them).
    """
    from django_tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    from bulkops.actions.export import export_dir, export_path
    from bulkops.models import FINISHED_OPERATION_STATUSES

    now = now or timezone.now()
    days = bulkops_settings.OPERATION_RETENTION_DAYS if retention_days is None else retention_days
    result = CleanupResult()

    def remove(path) -> None:
        if path.is_file():
            result.export_files += 1
            if not dry_run:
                path.unlink(missing_ok=True)

    horizon = now - datetime.timedelta(days=days)
    old = BulkOperation.objects.filter(
        status__in=FINISHED_OPERATION_STATUSES, finished_at__lt=horizon
    )
    expired = BulkOperation.objects.filter(action="export", expires_at__lt=now).exclude(
        export_file=""
    )
    for filename in (old.exclude(export_file="") | expired).values_list("export_file", flat=True):
        remove(export_path(filename))
    if export_dir().is_dir():
        part_horizon = (now - datetime.timedelta(days=1)).timestamp()
        for part in export_dir().glob("*.part"):
            if part.stat().st_mtime < part_horizon:
                remove(part)
    result.operations = old.count()
    finished_tasks = DBTaskResult.objects.filter(
        status__in=[TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED],
        finished_at__lt=now - task_results_after,
    )
    result.task_results = finished_tasks.count()
    if not dry_run:
        while batch := list(old.values_list("pk", flat=True)[:500]):
            BulkOperation.objects.filter(pk__in=batch).delete()
        finished_tasks.delete()
    return result
