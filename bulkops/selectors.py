"""Read-only queries: one visibility rule per purpose.

- sessions a user may *target* with an action: ``sessions_in_scope`` (read by lists
  of ids: ``sessions_in_scope_by_id``);
- sessions a user may *list*: ``sessions_for_user``;
- operations a user may see through the API and WebSocket (their own):
  ``operations_for_user`` / ``operation_get_for_user``;
- operations the admin shows (their own; a superuser's: everyone's):
  ``operations_for_admin``;
- whether a WebSocket's user (and token) still has access: ``access_holds``;
- an export a user may download (their own; staff with ``view_session``: everyone's):
  ``export_operation_for_download``;

How many rows a list shows without counting millions is ``bulkops.counting``'s.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import connections
from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils import timezone

from bulkops import itemstore
from bulkops.conf import bulkops_settings
from bulkops.exceptions import OperationNotFound
from bulkops.itemsummary import session_items
from bulkops.models import (
    ACTIVE_OPERATION_STATUSES,
    BulkOperation,
    BulkOperationItem,
    ItemOutcome,
    OperationStatus,
    Session,
    SessionStatus,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from bulkops.actions.base import BulkAction

#: Failed items listed in an operation's representation; the rest via the items list.
MAX_ERRORS_IN_REPRESENTATION = 100


def user_may_act_on_others(user: AbstractBaseUser, permission: str) -> bool:
    """Staff with the model permission may act on every user's sessions."""
    return bool(user.is_active and user.is_staff and user.has_perm(permission))


def sessions_in_scope(*, user: AbstractBaseUser, action: BulkAction) -> QuerySet[Session]:
    """The sessions ``user`` may target with ``action``: anything else is ``not_found``."""
    qs = action.base_queryset()
    if user_may_act_on_others(user, action.permission):
        return qs
    return qs.filter(owner=user)


def sessions_in_scope_by_id(*, user: AbstractBaseUser, action: BulkAction) -> QuerySet[Session]:
    """``sessions_in_scope`` for reading rows by lists of ids (validate, each chunk's
    lock pass): the owner is compared on each row found (``owner_id + 0``, which no
    index matches), so only the primary key can find them. Statistics taken before a
    user's sessions existed estimate the user's sessions at one row, and an owner index
    picked on that scans every session of the owner for every chunk (47 ms per
    1,000-id chunk for an owner of 120,000 sessions); by the primary key a chunk costs
    its ids, whatever the statistics say.

    The queryset of a shape (``scope_shape``) is built once per process and each call
    returns a copy of it (building it through the ORM was a tenth of a one-session
    operation's CPU in the engine)."""
    owner = None if user_may_act_on_others(user, action.permission) else user.pk
    try:
        shape = (type(action), tuple(sorted(action.params.items())), owner)
        hash(shape)
    except TypeError:  # a parameter that is not hashable: no shape, never cached
        shape = None
    built = _scopes.get(shape) if shape is not None else None
    if built is None:
        built = action.base_queryset()
        if owner is not None:
            built = built.alias(owner_checked=F("owner_id") + 0).filter(owner_checked=owner)
        if shape is not None:
            if len(_scopes) >= MAX_SCOPES:
                _scopes.clear()
            _scopes[shape] = built
    qs = built.all()  # a copy: the kept one is never evaluated
    setattr(qs, _SCOPE_SHAPE, shape)
    return qs


#: ``sessions_in_scope_by_id``'s querysets by shape, never evaluated (each call gets a
#: copy); at most ``MAX_SCOPES`` (one per action, parameters and owner), forgotten at once.
_scopes: dict[tuple, QuerySet[Session]] = {}
MAX_SCOPES = 1024


#: The attribute ``sessions_in_scope_by_id`` marks its queryset with (a queryset's
#: clone, e.g. after another ``filter``, does not carry it).
_SCOPE_SHAPE = "_bulkops_scope_shape"


def scope_shape(scope: QuerySet[Session]) -> tuple | None:
    """What ``scope`` is made of, when it is ``sessions_in_scope_by_id``'s queryset as
    returned (not filtered further): the action's class and parameters and the owner
    it is limited to (None: every owner's). Two such querysets of equal shape compile
    to the same SQL and parameters (the engine caches its chunk statement's SQL by
    it); None for any other queryset."""
    return getattr(scope, _SCOPE_SHAPE, None)


def sessions_for_user(*, user: AbstractBaseUser) -> QuerySet[Session]:
    """Sessions a user may list: their own; staff with view permission see everyone's."""
    qs = Session.objects.select_related("owner")
    if user_may_act_on_others(user, "bulkops.view_session"):
        return qs
    return qs.filter(owner=user)


#: Columns a list of sessions never shows (the content, up to megabytes, and the archive):
#: a page reads, sorts and sends the rest only.
LIST_DEFERRED_FIELDS = ("content", "archive_blob")


def session_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Session]:
    """``sessions_for_user`` as a list shows them: without the content and the archive."""
    return sessions_for_user(user=user).defer(*LIST_DEFERRED_FIELDS)


def sessions_list_is_everyones(*, user: AbstractBaseUser) -> bool:
    """Whether ``sessions_for_user`` lists every user's sessions (millions, possibly)."""
    return user_may_act_on_others(user, "bulkops.view_session")


def access_holds(*, user_id: int, token_key: str | None = None) -> bool:
    """Whether the user still exists and is active — and, for a connection that
    authenticated with a DRF token, whether that token still exists and is theirs."""
    from rest_framework.authtoken.models import Token

    if token_key is not None:
        return Token.objects.filter(key=token_key, user_id=user_id, user__is_active=True).exists()
    return get_user_model().objects.filter(pk=user_id, is_active=True).exists()


def session_counts_by_status(*, user: AbstractBaseUser) -> dict[str, int]:
    """The user's own sessions counted by status, plus ``deleted`` and ``total``.

    One index-only scan of (owner, status, deleted_at): one row per status, live and
    deleted apart; the table's size beyond the user's own rows does not matter."""
    counts = {status: 0 for status in SessionStatus.values}
    counts["deleted"] = 0
    rows = (
        Session.objects.filter(owner=user)
        .values("status")
        .annotate(rows=Count("*"), deleted=Count("deleted_at"))  # COUNT(col): non-null
        .order_by()
    )
    for row in rows:
        counts[row["status"]] += row["rows"] - row["deleted"]
        counts["deleted"] += row["deleted"]
    counts["total"] = sum(counts[s] for s in SessionStatus.values) + counts["deleted"]
    return counts


def operations_for_user(*, user: AbstractBaseUser) -> QuerySet[BulkOperation]:
    return BulkOperation.objects.filter(user=user).order_by("-created_at", "-pk")


def operation_get_for_user(*, user: AbstractBaseUser, operation_id: str) -> BulkOperation:
    """Return the user's operation; raise OperationNotFound for a missing or foreign one."""
    try:
        return operations_for_user(user=user).get(pk=operation_id)
    except (BulkOperation.DoesNotExist, ValueError) as exc:
        raise OperationNotFound("No such operation.") from exc


def operations_for_admin(*, user: AbstractBaseUser) -> QuerySet[BulkOperation]:
    """What the admin's operation pages show: the user's own, a superuser everyone's."""
    qs = BulkOperation.objects.select_related("user")
    return qs if user.is_superuser else qs.filter(user=user)


#: A session's history searches the operations the user can see, newest first, this
#: many at a time and at most this many: each batch is one probe of the items' unique
#: (operation, session_id) index per operation — no index on the session id alone, which
#: every item insert would pay for.
HISTORY_BATCH = 1000
HISTORY_SEARCHED = 5000


@dataclass
class SessionHistory:
    """The items that targeted one session, newest operation first."""

    items: list[BulkOperationItem]
    #: Whether every operation the user can see (since the session was created) was
    #: searched; else only the latest ``searched``.
    complete: bool
    searched: int


def session_history(
    *, user: AbstractBaseUser, session_id: str, since: datetime.datetime
) -> SessionHistory:
    """ "What happened to this session?": the items that targeted ``session_id`` in the
    operations the admin shows ``user`` (``operations_for_admin``) created since
    ``since`` (the session's creation), each with its operation and that operation's
    user — searched in the latest ``HISTORY_SEARCHED`` of them."""
    op_ids = list(
        operations_for_admin(user=user)
        .filter(created_at__gte=since)
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)[: HISTORY_SEARCHED + 1]
    )
    complete = len(op_ids) <= HISTORY_SEARCHED
    op_ids = op_ids[:HISTORY_SEARCHED]
    rank = {pk: n for n, pk in enumerate(op_ids)}
    found: list[BulkOperationItem] = []
    for start in range(0, len(op_ids), HISTORY_BATCH):
        batch = op_ids[start : start + HISTORY_BATCH]
        found += session_items(operation_ids=batch, session_id=session_id)
    found.sort(key=lambda item: rank[item.operation_id])
    return SessionHistory(items=found, complete=complete, searched=len(op_ids))


def active_operations_count(*, user: AbstractBaseUser) -> int:
    """Plain SQL: every start reads it (the cap); the ORM's ``count()`` cost 3× the query."""
    marks = ", ".join(["%s"] * len(ACTIVE_OPERATION_STATUSES))
    sql = f'SELECT COUNT(*) FROM "{BulkOperation._meta.db_table}" WHERE "user_id" = %s AND '
    with connections[BulkOperation.objects.db].cursor() as cursor:
        cursor.execute(f'{sql}"status" IN ({marks})', [user.pk, *ACTIVE_OPERATION_STATUSES])
        return cursor.fetchone()[0]


def operation_metrics(*, now: datetime.datetime | None = None) -> dict[str, Any]:
    """Aggregates only (no user data): operations by status, items processed, the
    oldest pending operation's age and the stalest running heartbeat (seconds)."""
    now = now or timezone.now()
    by_status = dict(BulkOperation.objects.values_list("status").annotate(n=Count("pk")).order_by())
    active = BulkOperation.objects.filter(status__in=ACTIVE_OPERATION_STATUSES)
    oldest = active.filter(status="pending").order_by("created_at")
    stalest = active.filter(status="running").order_by("heartbeat_at")
    first_pending = oldest.values_list("created_at", flat=True).first()
    first_beat = stalest.values_list("heartbeat_at", flat=True).first()
    return {
        "operations": {status: by_status.get(status, 0) for status in OperationStatus.values},
        "items_processed": BulkOperation.objects.aggregate(n=Sum("processed"))["n"] or 0,
        "oldest_pending_age_seconds": (now - first_pending).total_seconds()
        if first_pending
        else None,
        "stalest_heartbeat_age_seconds": (now - first_beat).total_seconds() if first_beat else None,
    }


def operation_errors(*, operation: BulkOperation, limit: int = MAX_ERRORS_IN_REPRESENTATION):
    return list(
        BulkOperationItem.objects.filter(operation=operation, outcome=ItemOutcome.FAILED)
        .order_by("session_id")
        .values("session_id", "reason", "message")[:limit]
    )


# --- read by the HTTP API ------------------------------------------------------------------
#: A download name as export writes it: ``session_export_YYYYMMDD_<operation id>.csv|json``.
EXPORT_FILENAME_RE = re.compile(
    r"session_export_(\d{8})_(op-[0-9a-f]{32})\.(csv|json|csv\.gz|jsonl\.gz)"
)


def operation_items(*, operation: BulkOperation, outcome: str | None = None):
    """The operation's items in session-id order, optionally of one outcome: a queryset,
    or for a large operation that keeps its outcomes in chunks a sequence of rows that
    paginates the same way (``itemstore.CompactItems``)."""
    return itemstore.operation_items(operation=operation, outcome=outcome)


def export_operation_for_download(*, user: AbstractBaseUser, filename: str) -> BulkOperation:
    """Return the export operation that owns the download ``filename``; raise
    OperationNotFound when the name is malformed or unknown, or the caller is neither
    its owner nor staff allowed to view sessions (they cannot tell which)."""
    match = EXPORT_FILENAME_RE.fullmatch(filename)
    if match is None:
        raise OperationNotFound("No such file.")
    qs = BulkOperation.objects.filter(pk=match.group(2), export_file=filename)
    if not user_may_act_on_others(user, "bulkops.view_session"):
        qs = qs.filter(user=user)
    operation = qs.first()
    if operation is None:
        raise OperationNotFound("No such file.")
    return operation


@dataclass(frozen=True)
class SliceTally:
    """A large operation's slices: how many there are, how many a worker holds and beats
    on right now, and how many are done."""

    total: int
    running: int
    done: int


def operation_slices(*, operation: BulkOperation) -> SliceTally | None:
    """The slice tally of a large operation (one query); None for any other operation.
    A slice runs while a worker's claim on it beats within
    ``BULKOPS_STALE_AFTER_SECONDS`` (a killed worker's slice stops counting then)."""
    if not operation.is_large:
        return None
    fresh = timezone.now() - datetime.timedelta(seconds=bulkops_settings.STALE_AFTER_SECONDS)
    # Aliases apart from the field names (``done`` is a field: an alias may not shadow it).
    counts = operation.slices.aggregate(
        n_total=Count("pk"),
        n_done=Count("pk", filter=Q(done=True)),
        n_running=Count("pk", filter=Q(done=False, heartbeat_at__gte=fresh) & ~Q(claimed_by="")),
    )
    return SliceTally(total=counts["n_total"], running=counts["n_running"], done=counts["n_done"])
