"""Per-user rate limits for bulk requests, on django-ratelimit's fixed windows.

Shared by the API and the admin, so both count against the same budget. A request is
checked first and counted only once it has started an operation (or passed validate):
a refused request, and an idempotent replay, never use up the budget (DESIGN §5).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django_ratelimit.core import get_usage

from bulkops.conf import bulkops_settings
from bulkops.exceptions import RateLimited

GROUP_PREFIX = "bulkops"


def _user_key(group: str, request: HttpRequest) -> str:
    return str(request.user.pk)


def _usage(request: HttpRequest, kind: str, *, increment: bool) -> dict[str, Any] | None:
    rate = bulkops_settings.RATE_LIMITS.get(kind)
    if not rate:
        return None
    return get_usage(
        request, group=f"{GROUP_PREFIX}.{kind}", key=_user_key, rate=rate, increment=increment
    )


def rate_limit_check(*, request: HttpRequest, kind: str) -> None:
    """Raise RateLimited when the user has used up the budget for ``kind`` in this
    window; count nothing."""
    usage = _usage(request, kind, increment=False)
    if usage is None:
        return
    if usage["count"] >= usage["limit"]:
        raise RateLimited(
            f"Rate limit exceeded for {kind}: {usage['limit']} per window "
            f"({bulkops_settings.RATE_LIMITS[kind]}). Try again in {usage['time_left']} s.",
            retry_after=usage["time_left"],
        )


def rate_limit_consume(*, request: HttpRequest, kind: str) -> None:
    """Count one accepted request against ``kind``."""
    _usage(request, kind, increment=True)


def rate_limit_status(*, request: HttpRequest) -> dict[str, dict[str, Any]]:
    """{kind: {rate, limit, used, remaining, reset_seconds}} for the caller."""
    status = {}
    for kind, rate in bulkops_settings.RATE_LIMITS.items():
        usage = _usage(request, kind, increment=False)
        if usage is None:
            continue
        status[kind] = {
            "rate": rate,
            "limit": usage["limit"],
            "used": usage["count"],
            "remaining": max(0, usage["limit"] - usage["count"]),
            "reset_seconds": max(0, usage["time_left"]),
        }
    return status
