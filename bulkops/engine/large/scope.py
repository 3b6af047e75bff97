"""Who may act past the per-operation cap, and on what.

A user with ``bulkops.run_large_operation`` (active staff; the action's own permission
still decides whose sessions it reaches) may send a **filter** selection past
``BULKOPS_MAX_SESSIONS_PER_OPERATION`` (export: ``BULKOPS_MAX_EXPORT_SESSIONS``), up to
``BULKOPS_MAX_LARGE_OPERATION_SESSIONS``. Id lists keep their cap; everyone else keeps
today's caps and messages. Large operations run on PostgreSQL only, never all-or-nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import QuerySet

from bulkops.conf import bulkops_settings

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from bulkops.actions.base import BulkAction


#: The permission that lets a filter go past the action's cap.
LARGE_OPERATION_PERMISSION = "bulkops.run_large_operation"


def may_run_large(user: AbstractBaseUser) -> bool:
    """Whether ``user`` may send a filter past the action's cap: active staff with
    ``bulkops.run_large_operation`` (the action's own permission still decides whose
    sessions it reaches, as for any operation)."""
    return bool(user.is_active and user.is_staff and user.has_perm(LARGE_OPERATION_PERMISSION))


@dataclass(frozen=True)
class LargeSelection:
    """A selection past the action's cap, from a user who may run large operations: the
    workers resolve it slice by slice; nothing lists its ids up front."""

    #: What the operation keeps for its workers (``BulkOperation.selection``): the
    #: filter as given, or the items of an earlier operation (``ItemsOf``).
    spec: dict[str, Any]
    #: What it selects now: the matching sessions in the user's scope (a filter), or
    #: the items it takes (a retry's or an undo's).
    rows: QuerySet
    #: How many ``rows`` holds, when that is known without counting them (an undo's:
    #: the undone operation's ``succeeded``).
    count: int | None = None

    @property
    def filter(self) -> dict[str, Any] | None:
        return self.spec.get("filter")


def large_cap_check(*, count: int) -> None:
    """Raise ValidationError (``too_many``, with the count and the cap) when a large
    selection of ``count`` sessions is past ``BULKOPS_MAX_LARGE_OPERATION_SESSIONS``.
    A count of exactly the cap + 1 is read as "more than the cap" (a bounded count)."""
    cap = bulkops_settings.MAX_LARGE_OPERATION_SESSIONS
    if count <= cap:
        return
    shown = f"more than {cap}" if count == cap + 1 else str(count)
    raise ValidationError(
        {
            "filter": f"The filter matches {shown} sessions; the cap for large operations "
            f"is {cap} (BULKOPS_MAX_LARGE_OPERATION_SESSIONS). Narrow the filter."
        },
        code="too_many",
    )


def large_refusal(action: BulkAction, cap: int) -> None:
    """Raise ValidationError when ``action`` cannot run past its cap of ``cap``: large
    operations need PostgreSQL, and an all-or-nothing one is a single transaction."""
    if connection.vendor != "postgresql":
        raise ValidationError(
            {
                "filter": f"The filter matches more than {cap} sessions, the cap for "
                f"{action.action_type}. Operations past the cap need PostgreSQL; this "
                "server runs on SQLite. Narrow the filter."
            },
            code="too_many",
        )
    if action.atomic:
        raise ValidationError(
            {
                "atomic": f"An all-or-nothing operation runs in one transaction: at most "
                f"{cap} sessions for {action.action_type}. Narrow the filter, or send "
                '"atomic": false.'
            },
            code="too_many",
        )
