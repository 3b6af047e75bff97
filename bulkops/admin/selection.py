"""The session changelist's rows as a selection: ticked ids, or "select all N matching"
sent as the changelist's filter when it maps exactly onto the one ``SessionFilterSet``,
else the matching ids read server-side — never one POST field per row.

Past the action's cap "select all N matching" is a large operation for a user who may
run one (``bulkops.run_large_operation``): it is sent as the changelist's filter, which
then must map exactly (no ids are read past the cap); everyone else keeps the cap."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import gettext as _

from bulkops.admin.base import OwnerFilter, owner_problem
from bulkops.counting import count_at_most
from bulkops.engine import Selection, may_run_large, selection_queryset
from bulkops.selectors import user_may_act_on_others

if TYPE_CHECKING:
    from django.db.models import QuerySet
    from django.http import HttpRequest

    from bulkops.actions.base import BulkAction
    from bulkops.models import Session

#: Changelist parameters that do not change which rows match.
NEUTRAL_PARAMS = {"o", "p", "all", "e"}
DATE_FIELD = "created_at"
#: The owner filter's parameter, and its former name.
OWNER_PARAMS = (OwnerFilter.parameter_name, OwnerFilter.legacy_parameter_name)
#: The admin's ``deleted`` list filter -> the selection filter's ``deleted``.
DELETED_VALUES = {None: False, "yes": True}


class NoEquivalent(Exception):
    """A changelist parameter the selection filter cannot say exactly."""


def sees_every_session(user) -> bool:
    """Whether the session changelist shows every user's sessions (else only the user's)."""
    return user_may_act_on_others(user, "bulkops.view_session")


def _date_hierarchy_range(params: dict[str, str]) -> tuple[str, str]:
    try:
        year = int(params.pop(f"{DATE_FIELD}__year"))
        month = int(params.pop(f"{DATE_FIELD}__month", 0)) or None
        day = int(params.pop(f"{DATE_FIELD}__day", 0)) or None
        start = datetime.datetime(year, month or 1, day or 1)
        if day:
            end = start + datetime.timedelta(days=1)
        elif month:
            end = (start + datetime.timedelta(days=32)).replace(day=1)
        else:
            end = start.replace(year=year + 1)
    except (KeyError, ValueError, OverflowError):
        raise NoEquivalent from None
    tz = timezone.get_current_timezone()
    return timezone.make_aware(start, tz).isoformat(), timezone.make_aware(end, tz).isoformat()


def _created_range(params: dict[str, str]) -> dict[str, str]:
    result: dict[str, str] = {}
    if f"{DATE_FIELD}__year" in params:
        result["created_after"], result["created_before"] = _date_hierarchy_range(params)
    for lookup, key in (("gte", "created_after"), ("lt", "created_before")):
        value = params.pop(f"{DATE_FIELD}__{lookup}", None)
        if value is not None:
            if key in result:
                raise NoEquivalent
            result[key] = value
    return result


def _search(params: dict[str, str]) -> dict[str, str]:
    terms = list(smart_split(params.pop("q", "")))
    if len(terms) > 1:
        # The admin ANDs the words; the selection filter searches for the whole text.
        raise NoEquivalent
    if not terms:
        return {}
    term = terms[0]
    if term[:1] in "\"'" and term[-1:] == term[:1]:
        term = unescape_string_literal(term)
    return {"search": term} if term else {}


def _owner(params: dict[str, str]) -> dict[str, str]:
    """The owner filter (``owner``, formerly ``owner__id__exact``): the same user id or
    username the selection filter's ``owner`` takes."""
    values = [params.pop(name) for name in OWNER_PARAMS if name in params]
    if len(values) > 1 or any(owner_problem(v) for v in values if v):
        raise NoEquivalent
    return {"owner": values[0]} if values and values[0] else {}


def changelist_filter(request: HttpRequest) -> dict[str, Any] | None:
    """Translate the session changelist's query string into a selection filter
    (the API's filter keys: status, search, created_after, created_before, owner,
    deleted); return
    None when some parameter has no exact equivalent."""
    params = {k: v for k, v in request.GET.items() if k not in NEUTRAL_PARAMS}
    if any(len(request.GET.getlist(k)) > 1 for k in params):
        return None
    try:
        deleted = params.pop("deleted", None)
        if deleted not in DELETED_VALUES:
            raise NoEquivalent
        result: dict[str, Any] = {"deleted": DELETED_VALUES[deleted]}
        if "status__exact" in params:
            result["status"] = params.pop("status__exact")
        result |= _owner(params) | _created_range(params) | _search(params)
    except NoEquivalent:
        return None
    return None if params else result


def _ids(queryset: QuerySet[Session]) -> list[str]:
    return list(queryset.order_by("pk").values_list("pk", flat=True))


def changelist_selection(
    request: HttpRequest, queryset: QuerySet[Session], act: BulkAction
) -> tuple[Selection, int]:
    """The selection for the rows the action was run on, and their number.

    Explicitly ticked rows are sent as ids (one page at most). "Select all N matching"
    (``select_across``) is sent as the changelist's filter when it maps exactly — the
    mapped filter must match the same number of rows in the action's scope — else as
    the matching ids read here. Raise ValidationError when nothing matches or more than
    the action's cap.
    """
    if request.POST.get("select_across") not in ("1", "True", "true"):
        ids = _ids(queryset)
        if not ids:
            raise ValidationError(_("None of the selected sessions can be shown any more."))
        return Selection(session_ids=ids), len(ids)
    # Bounded: "select all" over millions of rows must not count them.
    count = count_at_most(queryset, act.max_sessions)
    if count > act.max_sessions:
        return _past_the_cap(request, queryset, act)
    if not count:
        raise ValidationError(_("No sessions match the filter."))
    filters = _changelist_filter_in_scope(request)
    if filters is not None:
        matched = selection_queryset(user=request.user, action=act, filters=filters)
        if matched.count() == count:
            return Selection(filter=filters), count
    return Selection(session_ids=_ids(queryset)), count


def _changelist_filter_in_scope(request: HttpRequest) -> dict[str, Any] | None:
    """``changelist_filter``, limited to the user's own sessions when the changelist
    shows only theirs."""
    filters = changelist_filter(request)
    if filters is not None and not sees_every_session(request.user):
        filters["owner"] = request.user.pk
    return filters


def _past_the_cap(
    request: HttpRequest, queryset: QuerySet[Session], act: BulkAction
) -> tuple[Selection, int]:
    """ "Select all N matching" past the action's cap: the changelist's filter, as a large
    selection, and the exact number of matching rows. Raise ValidationError for a user
    who may not run large operations (the cap's message), or when the filter cannot say
    exactly the rows the changelist matches."""
    cap = act.max_sessions
    # Large operations run on PostgreSQL only: elsewhere everyone keeps the cap.
    if not (may_run_large(request.user) and connection.vendor == "postgresql"):
        raise ValidationError(
            _(
                "More than %(cap)d sessions match the filter, and %(action)s takes at most "
                "%(cap)d at once. Narrow the filter and try again."
            )
            % {"action": act.display_name.lower(), "cap": cap}
        )
    filters = _changelist_filter_in_scope(request)
    count = queryset.order_by().count()
    if filters is None or (
        selection_queryset(user=request.user, action=act, filters=filters).count() != count
    ):
        raise ValidationError(
            _(
                "%(count)d sessions match, more than the %(cap)d %(action)s takes at once. "
                "Past that, the selection is sent as a filter — status, deleted, owner, "
                "created dates and a one-word search — and this changelist's filters cannot "
                "all be said that way (or match sessions you may not %(verb)s). Use only "
                "those filters, or narrow the selection to %(cap)d sessions."
            )
            % {
                "count": count,
                "cap": cap,
                "action": act.display_name.lower(),
                "verb": act.action_type,
            }
        )
    return Selection(filter=filters), count
