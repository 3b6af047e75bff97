"""Per-user rate limits for bulk requests, on django-ratelimit's fixed windows.

One helper for every interface: ``with rate_limit(request=…, scope=…):`` around the
service call. The API and the admin share it, so both count against the same budget.
A request is checked on the way in and counted only when the block succeeds (it
started an operation, or validate answered): a refused request, and an idempotent
replay (answered before the block), never use up the budget (DESIGN §5).

Each action declares its default rate (``BulkAction.rate_limit``); validate and retry
have theirs here; ``BULKOPS_RATE_LIMITS`` (from ``BULKOPS_RATE_LIMIT_<SCOPE>``) overrides.

**Under a burst** the check and the count cannot race: one user's rate-limited requests
run one at a time, under a lock per user — a Redis lock when the cache is Redis (every
server shares it), a process lock otherwise (the embedded default is one process). So
30 parallel requests against a limit of 10 start exactly 10 operations. (The
active-operations cap is held by the database: ``engine.operations``.)

**Without Redis** (unreachable, or an error) rate limits **fail open**: the request is
served, unlimited, and a warning is logged — availability over strictness, while the
active-operations cap (in the database) still bounds the load one user can put on the
workers. Timeouts are short (0.5 s, settings.py), so no request hangs on it.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.http import HttpRequest
from django_ratelimit.core import get_usage

from bulkops.actions import registered_actions
from bulkops.conf import bulkops_settings
from bulkops.exceptions import RateLimited

GROUP_PREFIX = "bulkops"
#: Scopes that are not an action. ``undo`` is the undo action's own (``UndoAction.rate_limit``).
VALIDATE, RETRY, UNDO = "validate", "retry", "undo"
BUILTIN_RATES = {VALIDATE: "120/m", RETRY: "10/m"}
#: Longest a request waits for the user's previous one (then 429, try again).
LOCK_WAIT_SECONDS = 10
#: A lock's lifetime, should its holder die (a request never takes this long).
LOCK_TTL_SECONDS = 30

logger = logging.getLogger("bulkops.ratelimits")
_process_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
_process_locks_guard = threading.Lock()


def rates() -> dict[str, str]:
    """Every scope's rate: the built-in ones, each action's, then the settings'."""
    declared = {a.action_type: a.rate_limit for a in registered_actions().values()}
    return {**BUILTIN_RATES, **declared, **bulkops_settings.RATE_LIMITS}


def _user_key(group: str, request: HttpRequest) -> str:
    return str(request.user.pk)


def _usage(request: HttpRequest, scope: str, *, increment: bool) -> dict[str, Any] | None:
    """django-ratelimit's usage of ``scope``, or None: no rate, or the cache failed
    (fail open)."""
    rate = rates().get(scope)
    if not rate:
        return None
    try:
        return get_usage(
            request, group=f"{GROUP_PREFIX}.{scope}", key=_user_key, rate=rate, increment=increment
        )
    except Exception:
        logger.warning("rate limit of %s not applied: the cache failed", scope, exc_info=True)
        return None


def _process_lock(name: str) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks[name]


@contextmanager
def user_lock(request: HttpRequest) -> Iterator[None]:
    """Hold the user's rate-limit lock for the block: a Redis lock shared by every
    server when the cache is Redis, else a lock of this process. Raise RateLimited when
    it is not free within ``LOCK_WAIT_SECONDS``; fail open when Redis fails."""
    name = f"{GROUP_PREFIX}:user-lock:{request.user.pk}"
    cache = caches["default"]
    if not hasattr(cache, "lock"):
        lock = _process_lock(name)
        if not lock.acquire(timeout=LOCK_WAIT_SECONDS):
            raise RateLimited("Your previous request is still running.", retry_after=1)
        try:
            yield
        finally:
            lock.release()
        return
    try:
        lock = cache.lock(name, timeout=LOCK_TTL_SECONDS, blocking_timeout=LOCK_WAIT_SECONDS)
        acquired = lock.acquire()
    except Exception:
        logger.warning("rate limits not serialised: the cache failed", exc_info=True)
        lock, acquired = None, None
    if acquired is False:
        raise RateLimited("Your previous request is still running.", retry_after=1)
    try:
        yield
    finally:
        if lock is not None:
            _release_quietly(lock)


def _release_quietly(lock) -> None:
    try:
        lock.release()
    except Exception:
        logger.warning("could not release a rate-limit lock (it expires)", exc_info=True)


@dataclass
class Admission:
    """What ``rate_limit`` yields to its block."""

    #: What the ``exempt`` question answered (e.g. the operation a twin request with
    #: the same Idempotency-Key just started): the block returns it, starting nothing.
    exempt: Any = None
    #: The block sets it False when it turned out to start nothing (a replay).
    counted: bool = True


@contextmanager
def rate_limit(
    *, request: HttpRequest, scope: str, exempt: Callable[[], Any] | None = None
) -> Iterator[Admission]:
    """Raise RateLimited when the user has used up ``scope``'s budget in this window;
    otherwise run the block and count one request once it succeeded — all under the
    user's lock, so parallel requests cannot all pass the check before any counts.

    ``exempt`` is asked first, under the lock: when it answers something (an idempotent
    replay a concurrent twin made possible), that is yielded as ``admission.exempt``,
    neither checked nor counted. A block that sets ``admission.counted = False`` is not
    counted either (DESIGN §5: a replay does not count)."""
    guard = user_lock(request) if rates().get(scope) else nullcontext()
    with guard:
        admission = Admission(exempt=exempt() if exempt is not None else None)
        if admission.exempt is not None:
            yield admission
            return
        usage = _usage(request, scope, increment=False)
        if usage is not None and usage["count"] >= usage["limit"]:
            raise RateLimited(
                f"Rate limit exceeded for {scope}: {usage['limit']} per window "
                f"({rates()[scope]}). Try again in {usage['time_left']} s.",
                retry_after=usage["time_left"],
            )
        yield admission
        if admission.counted:
            _usage(request, scope, increment=True)


def rate_limit_left(*, request: HttpRequest, scope: str) -> dict[str, Any] | None:
    """{rate, limit, used, remaining, reset_seconds} of ``scope`` for the caller, or None
    (no rate, or the cache failed: not limited)."""
    usage = _usage(request, scope, increment=False)
    if usage is None:
        return None
    return {
        "rate": rates()[scope],
        "limit": usage["limit"],
        "used": usage["count"],
        "remaining": max(0, usage["limit"] - usage["count"]),
        "reset_seconds": max(0, usage["time_left"]),
    }


def rate_limit_status(*, request: HttpRequest) -> dict[str, dict[str, Any]]:
    """{scope: {rate, limit, used, remaining, reset_seconds}} for the caller."""
    status = {scope: rate_limit_left(request=request, scope=scope) for scope in rates()}
    return {scope: left for scope, left in status.items() if left is not None}
