"""What a bulk request targets: an explicit id list, or a filter ("select all that match").

The one home of two rules every interface shares:

- ``clean_session_ids`` (``engine.inputs``) — the one session-id list validator (the
  API's field calls it);
- ``SessionFilterSet`` — the one filter of sessions: the API's session list, filter
  selections (API, CLI) and the admin's "select all N matching" all go through it, so a
  filter means the same thing everywhere. What each key of a filter selection may hold
  is ``engine.inputs.FILTER_KEYS``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import django_filters
from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django_filters.constants import EMPTY_VALUES

from bulkops import itemstore
from bulkops.conf import bulkops_settings
from bulkops.counting import EXACT_COUNT_LIMIT, count_at_most
from bulkops.engine.inputs import (
    FILTER_KEYS,
    MAX_OWNER_ID,
    MAX_OWNER_LENGTH,
    MAX_SEARCH_LENGTH,
    clean_session_ids,
    parse_moment,
    unknown_filter_keys,
)
from bulkops.engine.large.scope import LargeSelection, large_refusal, may_run_large
from bulkops.models import (
    BulkOperation,
    BulkOperationItem,
    ItemOutcome,
    Session,
    SessionStatus,
)
from bulkops.selectors import sessions_in_scope

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from bulkops.actions.base import BulkAction

BOOLEAN_CHOICES = (("true", "true"), ("false", "false"))


@dataclass(frozen=True)
class ItemsOf:
    """The items of an earlier operation with one outcome, in session-id order: what a
    retry (failed) or an undo (succeeded) acts on. Engine callers only, never a client."""

    operation_id: str
    outcome: str
    exclude_reasons: tuple[str, ...] = ()

    def items(self) -> QuerySet[BulkOperationItem]:
        qs = BulkOperationItem.objects.filter(operation_id=self.operation_id, outcome=self.outcome)
        if self.exclude_reasons:
            qs = qs.exclude(reason__in=self.exclude_reasons)
        return qs.order_by("session_id")

    @property
    def in_chunks(self) -> bool:
        """Whether these are the succeeded sessions of a compact operation: kept in its
        chunks, not as items (``bulkops.itemstore``)."""
        return (
            self.outcome == ItemOutcome.SUCCEEDED
            and not self.exclude_reasons
            and itemstore.has_chunks(self.operation_id)
        )

    def first_ids(self, limit: int) -> list[str]:
        """The first ``limit`` session ids, in id order."""
        if self.in_chunks:
            return itemstore.succeeded_ids(operation_id=self.operation_id, limit=limit)
        return list(self.items().values_list("session_id", flat=True)[:limit])

    def spec(self) -> dict[str, Any]:
        return {
            "items_of": self.operation_id,
            "outcome": self.outcome,
            "exclude_reasons": list(self.exclude_reasons),
        }

    @classmethod
    def of_spec(cls, spec: dict[str, Any]) -> ItemsOf:
        return cls(spec["items_of"], spec["outcome"], tuple(spec.get("exclude_reasons", ())))


@dataclass(frozen=True)
class Selection:
    """Exactly one of an explicit id list, a filter ("select all that match") or, for
    the engine's own callers, the items of an earlier operation."""

    session_ids: list[str] | None = None
    filter: dict[str, Any] | None = None
    items_of: ItemsOf | None = None


# --- dates ----------------------------------------------------------------------------------
class MomentField(forms.Field):
    default_error_messages = {"invalid": "Must be an ISO 8601 date or date-time."}

    def to_python(self, value: Any) -> datetime.datetime | None:
        if value in self.empty_values:
            return None
        moment = parse_moment(value)
        if moment is None:
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return moment


class MomentFilter(django_filters.Filter):
    field_class = MomentField


class StableOrderingFilter(django_filters.OrderingFilter):
    """``ordering`` as asked, then by ``id``: rows with the same value (many sessions
    share a title or a status) keep one order from page to page, so paging never skips
    or repeats one. The tie-break runs the way the last key does, so one index on
    (…, key, id) serves both directions; ``created_at`` pairs with ``id`` the other way,
    as the default order (newest first, then ``id``) and its index do."""

    REVERSED_TIEBREAK = ("created_at",)

    def filter(self, qs: QuerySet[Session], value: Any) -> QuerySet[Session]:
        if value in EMPTY_VALUES:
            return qs
        ordering = [self.get_ordering_value(param) for param in value if param not in EMPTY_VALUES]
        if not ordering or any(key.lstrip("-") == "id" for key in ordering):
            return qs.order_by(*ordering)
        last = ordering[-1]
        descending = last.startswith("-") != (last.lstrip("-") in self.REVERSED_TIEBREAK)
        return qs.order_by(*ordering, "-id" if descending else "id")


# --- the one filter -------------------------------------------------------------------------
def owner_users(value: str) -> QuerySet:
    """The users an ``owner`` value names, as every interface reads it: a number is the
    user with that id *and* the user with that username; anything else a username.
    (The ids first, then the sessions: an index lookup on the owner, not a join.)"""
    users = get_user_model().objects.all()
    if value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= MAX_OWNER_ID:
        users = users.filter(Q(pk=int(value)) | Q(username=value))
    else:
        users = users.filter(username=value)
    return users.values("pk")


class SessionFilterSet(django_filters.FilterSet):
    """``status`` (one or more), ``search`` (title or id, case-insensitive),
    ``created_after`` (inclusive), ``created_before`` (exclusive), ``owner`` (a user id
    *or* username: a number matches the user with that id and the user with that
    username), ``deleted`` (``true``: only soft-deleted; ``false``: only live; absent:
    ``deleted_default``), ``ordering`` (the list only)."""

    # distinct=False: a column of the row itself cannot duplicate rows, and a DISTINCT
    # over whole rows would sort them all.
    status = django_filters.MultipleChoiceFilter(choices=SessionStatus.choices, distinct=False)
    search = django_filters.CharFilter(
        method="filter_search", max_length=MAX_SEARCH_LENGTH, strip=False
    )
    created_after = MomentFilter(field_name="created_at", lookup_expr="gte")
    created_before = MomentFilter(field_name="created_at", lookup_expr="lt")
    owner = django_filters.CharFilter(method="filter_owner", max_length=MAX_OWNER_LENGTH)
    deleted = django_filters.ChoiceFilter(choices=BOOLEAN_CHOICES, method="filter_deleted")
    ordering = StableOrderingFilter(fields=("created_at", "updated_at", "title", "status", "id"))

    class Meta:
        model = Session
        fields: list[str] = []

    def __init__(self, *args: Any, deleted_default: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deleted_default = deleted_default

    def filter_search(self, qs: QuerySet[Session], name: str, value: str) -> QuerySet[Session]:
        return qs.filter(Q(title__icontains=value) | Q(id__icontains=value))

    def filter_owner(self, qs: QuerySet[Session], name: str, value: str) -> QuerySet[Session]:
        return qs.filter(owner__in=owner_users(value))

    def filter_deleted(self, qs: QuerySet[Session], name: str, value: str) -> QuerySet[Session]:
        return qs  # applied in filter_queryset, which also covers the default

    def filter_queryset(self, queryset: QuerySet[Session]) -> QuerySet[Session]:
        queryset = super().filter_queryset(queryset)
        value = self.form.cleaned_data.get("deleted")
        deleted = self.deleted_default if value in (None, "") else value == "true"
        return queryset.filter(deleted_at__isnull=not deleted)


def filter_data(filters: Any) -> dict[str, Any]:
    """A selection filter (``{status, search, created_after, created_before, owner,
    deleted}``) as ``SessionFilterSet`` data; raise ValidationError on unknown keys or
    a value its key's rule (``FILTER_KEYS``) refuses (a value that would silently widen
    the selection — an empty status list, an empty owner — is refused, not ignored)."""
    if not isinstance(filters, dict):
        raise ValidationError({"filter": "Must be an object."})
    unknown = set(map(str, filters)) - set(FILTER_KEYS)
    if unknown:
        raise ValidationError({"filter": unknown_filter_keys(list(unknown))})
    data = {}
    for key, value in filters.items():
        if value is None:
            continue
        problem = FILTER_KEYS[key].problem(value)
        if problem:
            raise ValidationError({f"filter.{key}": problem})
        data[key] = FILTER_KEYS[key].as_data(value)
    return data


def sessions_matching(
    queryset: QuerySet[Session], *, filters: Any, deleted_default: bool
) -> QuerySet[Session]:
    """``queryset`` narrowed by a selection filter; raise ValidationError naming
    ``filter.<key>`` for a bad value."""
    filterset = SessionFilterSet(
        filter_data(filters), queryset=queryset, deleted_default=deleted_default
    )
    if not filterset.is_valid():
        raise ValidationError(
            {f"filter.{key}": list(messages) for key, messages in filterset.errors.items()}
        )
    return filterset.qs


def selection_queryset(
    *, user: AbstractBaseUser, action: BulkAction, filters: Any
) -> QuerySet[Session]:
    """The sessions a filter selects for ``action``: within the user's scope
    (``sessions_in_scope``)."""
    return sessions_matching(
        sessions_in_scope(user=user, action=action),
        filters=filters,
        deleted_default=action.filter_deleted,
    )


#: An over-cap filter's matches are counted up to this many times the cap, and never
#: beyond ``EXACT_COUNT_LIMIT`` rows (never millions).
OVER_CAP_COUNT_FACTOR = 10


def matched_count(queryset: QuerySet[Session], cap: int) -> str:
    """How many sessions an over-cap filter matches, as text: exact up to
    ``min(OVER_CAP_COUNT_FACTOR × cap, EXACT_COUNT_LIMIT)`` (a bounded count), else
    "more than N" — for a cap of 10,000 that is known without counting."""
    limit = max(cap, min(OVER_CAP_COUNT_FACTOR * cap, EXACT_COUNT_LIMIT))
    count = count_at_most(queryset, limit) if limit > cap else limit + 1
    return f"more than {limit}" if count > limit else str(count)


def _too_many(queryset: QuerySet[Session], action: BulkAction, cap: int) -> ValidationError:
    return ValidationError(
        {
            "filter": f"The filter matches {matched_count(queryset, cap)} sessions; the cap "
            f"for {action.action_type} is {cap}. Narrow the filter."
        },
        code="too_many",
    )


def selection_target(
    *, user: AbstractBaseUser, action: BulkAction, selection: Selection, allow_empty: bool = False
) -> list[str] | LargeSelection:
    """As ``selection_resolve``, except that a filter past the action's cap, sent by a
    user who ``may_run_large``, is a ``LargeSelection`` instead of a 400 (its size is
    checked against ``BULKOPS_MAX_LARGE_OPERATION_SESSIONS`` once it is counted:
    ``large_cap_check``). Raise ValidationError when such a selection cannot run large
    (SQLite, ``atomic``)."""
    return _resolve(
        user=user, action=action, selection=selection, allow_empty=allow_empty, large=True
    )


def selection_resolve(
    *, user: AbstractBaseUser, action: BulkAction, selection: Selection, allow_empty: bool = False
) -> list[str]:
    """Return the targeted session ids (order kept for id lists, id order for filters);
    raise ValidationError when the selection is malformed, over the action's cap, or a
    filter that matches nothing (unless ``allow_empty``: validate's question)."""
    ids = _resolve(
        user=user, action=action, selection=selection, allow_empty=allow_empty, large=False
    )
    assert isinstance(ids, list)
    return ids


def _resolve(
    *,
    user: AbstractBaseUser,
    action: BulkAction,
    selection: Selection,
    allow_empty: bool,
    large: bool,
) -> list[str] | LargeSelection:
    given = (selection.session_ids, selection.filter, selection.items_of)
    if sum(part is not None for part in given) != 1:
        raise ValidationError(
            {"non_field_errors": "Give exactly one of 'session_ids' or 'filter'."}
        )
    cap = action.max_sessions
    if selection.session_ids is not None:
        return clean_session_ids(selection.session_ids, cap=cap)
    if selection.items_of is not None:
        return _resolve_items(user=user, action=action, items_of=selection.items_of, large=large)
    qs = selection_queryset(user=user, action=action, filters=selection.filter)
    ids = list(qs.order_by("id").values_list("id", flat=True)[: cap + 1])
    if len(ids) > cap:
        if not (large and may_run_large(user)):
            raise _too_many(qs, action, cap)
        large_refusal(action, cap)
        return LargeSelection(spec={"filter": dict(selection.filter or {})}, rows=qs)
    if not ids and not allow_empty:
        raise ValidationError({"filter": "No sessions match the filter."}, code="empty")
    return ids


def _resolve_items(
    *, user: AbstractBaseUser, action: BulkAction, items_of: ItemsOf, large: bool
) -> list[str] | LargeSelection:
    """The session ids of ``items_of`` — or, when they are the items of a large
    operation and more than ``BULKOPS_MAX_SESSIONS_PER_OPERATION``, a large selection
    of them (for a user who may run one)."""
    source = BulkOperation.objects.filter(pk=items_of.operation_id).only("selection", "succeeded")
    source = source.first()
    source_is_large = source is not None and source.is_large
    cap = bulkops_settings.MAX_SESSIONS_PER_OPERATION if source_is_large else action.max_sessions
    items = items_of.items()
    ids = items_of.first_ids(cap + 1)
    if len(ids) <= cap or not source_is_large:
        return ids
    if not (large and may_run_large(user)):
        raise ValidationError(
            {
                "non_field_errors": f"More than {cap} sessions: past the cap this runs as "
                "a large operation, which needs the bulkops.run_large_operation permission."
            },
            code="too_many",
        )
    large_refusal(action, cap)
    # Every succeeded session has its item: the counter is their count.
    known = items_of.outcome == ItemOutcome.SUCCEEDED and not items_of.exclude_reasons
    return LargeSelection(
        spec=items_of.spec(), rows=items, count=source.succeeded if known else None
    )
