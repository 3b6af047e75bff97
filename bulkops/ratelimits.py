"""Per-user rate limits for bulk requests, on django-ratelimit's fixed windows.

One helper for every interface: ``with rate_limit(request=…, scope=…):`` around the
service call. The API and the admin share it, so both count against the same budget.
A request is checked on the way in and counted only when the block succeeds (it
started an operation, or validate answered): a refused request, and an idempotent
replay (answered before the block), never use up the budget (DESIGN §5).

Each action declares its default rate (``BulkAction.rate_limit``); validate and retry
have theirs here; ``BULKOPS_RATE_LIMITS`` (from ``BULKOPS_RATE_LIMIT_<SCOPE>``) overrides.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.http import HttpRequest
from django_ratelimit.core import get_usage

from bulkops.actions import registered_actions
from bulkops.conf import bulkops_settings
from bulkops.exceptions import RateLimited

GROUP_PREFIX = "bulkops"
#: Scopes that are not an action.
VALIDATE, RETRY = "validate", "retry"
BUILTIN_RATES = {VALIDATE: "120/m", RETRY: "10/m"}


def rates() -> dict[str, str]:
    """Every scope's rate: the built-in ones, each action's, then the settings'."""
    declared = {a.action_type: a.rate_limit for a in registered_actions().values()}
    return {**BUILTIN_RATES, **declared, **bulkops_settings.RATE_LIMITS}


def _user_key(group: str, request: HttpRequest) -> str:
    return str(request.user.pk)


def _usage(request: HttpRequest, scope: str, *, increment: bool) -> dict[str, Any] | None:
    rate = rates().get(scope)
    if not rate:
        return None
    return get_usage(
        request, group=f"{GROUP_PREFIX}.{scope}", key=_user_key, rate=rate, increment=increment
    )


@contextmanager
def rate_limit(*, request: HttpRequest, scope: str) -> Iterator[None]:
    """Raise RateLimited when the user has used up ``scope``'s budget in this window;
    otherwise run the block and count one request once it succeeded."""
    usage = _usage(request, scope, increment=False)
    if usage is not None and usage["count"] >= usage["limit"]:
        raise RateLimited(
            f"Rate limit exceeded for {scope}: {usage['limit']} per window "
            f"({rates()[scope]}). Try again in {usage['time_left']} s.",
            retry_after=usage["time_left"],
        )
    yield
    _usage(request, scope, increment=True)


def rate_limit_status(*, request: HttpRequest) -> dict[str, dict[str, Any]]:
    """{scope: {rate, limit, used, remaining, reset_seconds}} for the caller."""
    status = {}
    for scope, rate in rates().items():
        usage = _usage(request, scope, increment=False)
        if usage is None:
            continue
        status[scope] = {
            "rate": rate,
            "limit": usage["limit"],
            "used": usage["count"],
            "remaining": max(0, usage["limit"] - usage["count"]),
            "reset_seconds": max(0, usage["time_left"]),
        }
    return status
