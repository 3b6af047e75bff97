"""Per-user rate limits for bulk requests, on django-ratelimit's fixed windows.

Counters are keyed on the user (its primary key), never on an HTTP request, so the
API, the admin and the ``bulk`` command share one budget per user and scope.

* **Starting an operation** (create, retry, undo) is limited by the engine itself, in
  the transaction that creates the operation, under the user's row lock
  (``engine.operations``): ``rate_limit_check`` before anything is written,
  ``rate_limit_count`` once the operation exists. One user's creators run one at a
  time there, so 30 parallel requests against a limit of 10 start exactly 10
  operations, on one server or many. A refused request (any error) and an idempotent
  replay are never counted: the contract says neither uses up the budget. On Redis the
  engine's check and count are one round trip (``rate_limit_taken``: a Lua script
  before the operation is made, the count given back if the request is then refused).
* **Other requests** (validate) use ``with rate_limit(user=…, scope=…):``: checked on
  the way in and counted when the block succeeds, under a lock per user — a Redis lock
  when the cache is Redis (every server shares it), a process lock otherwise (the
  embedded default is one process).

Each action declares its default rate (``BulkAction.rate_limit``); validate and retry
have theirs here; ``BULKOPS_RATE_LIMITS`` (from ``BULKOPS_RATE_LIMIT_<SCOPE>``) overrides.

**Without Redis** (unreachable, or an error) rate limits **fail open**: the request is
served, unlimited, and a warning is logged — availability over strictness, while the
active-operations cap (in the database) still bounds the load one user can put on the
workers. Timeouts are short (0.5 s, settings.py), so no request hangs on it.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import caches
from django_ratelimit import ALL
from django_ratelimit import core as ratelimit_core
from django_ratelimit.core import get_usage

from bulkops.actions import registered_actions
from bulkops.conf import bulkops_settings
from bulkops.exceptions import RateLimited

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

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


def _group(scope: str) -> str:
    return f"{GROUP_PREFIX}.{scope}"


def _usage(user: AbstractBaseUser, scope: str, *, increment: bool) -> dict[str, Any] | None:
    """django-ratelimit's usage of ``scope`` by ``user``, or None: no rate, or the cache
    failed (fail open). The key is the user's primary key (django-ratelimit asks for a
    request only to hand it to the key function)."""
    rate = rates().get(scope)
    if not rate:
        return None
    user_key = str(user.pk)
    try:
        return get_usage(
            None,
            group=_group(scope),
            key=lambda group, request: user_key,
            rate=rate,
            increment=increment,
        )
    except Exception:
        logger.warning("rate limit of %s not applied: the cache failed", scope, exc_info=True)
        return None


def _keys(user: AbstractBaseUser, scopes: dict[str, str]) -> dict[str, tuple[str, int, int]]:
    """{scope: (cache key, limit, window end)} of ``user`` for each of ``scopes``
    ({scope: rate}): django-ratelimit's own keys and windows, so what ``get_usage``
    counts is what is read and counted here."""
    value = str(user.pk)
    keys = {}
    for scope, rate in scopes.items():
        limit, period = ratelimit_core._split_rate(rate)
        window = ratelimit_core._get_window(value, period)
        key = ratelimit_core._make_cache_key(_group(scope), window, rate, value, ALL)
        keys[scope] = (key, limit, window)
    return keys


def _read(user: AbstractBaseUser, scopes: dict[str, str]) -> dict[str, dict[str, Any]]:
    """{scope: usage} of ``user`` for each of ``scopes`` ({scope: rate}), read in one
    cache round trip (``get_usage`` costs two per scope: an ``add``, then a ``get``).
    Empty when rate limits are off or the cache failed (fail open)."""
    if not scopes or not getattr(settings, "RATELIMIT_ENABLE", True):
        return {}
    keys = _keys(user, scopes)
    try:
        cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
        counts = cache.get_many([key for key, _, _ in keys.values()])
    except Exception:
        logger.warning("rate limits not read: the cache failed", exc_info=True)
        return {}
    now = int(ratelimit_core.time.time())
    return {
        scope: {"count": counts.get(key, 0), "limit": limit, "time_left": window - now}
        for scope, (key, limit, window) in keys.items()
    }


def rate_limit_check(*, user: AbstractBaseUser, scope: str) -> None:
    """Raise RateLimited (with ``retry_after``) when ``user`` has used up ``scope``'s
    budget in this window; count nothing. The caller serialises check and count (the
    engine: under the user's row lock)."""
    rate = rates().get(scope)
    usage = _read(user, {scope: rate} if rate else {}).get(scope)
    if usage is not None and usage["count"] >= usage["limit"]:
        raise RateLimited(
            f"Rate limit exceeded for {scope}: {usage['limit']} per window "
            f"({rate}). Try again in {usage['time_left']} s.",
            retry_after=usage["time_left"],
        )


def rate_limit_count(*, user: AbstractBaseUser, scope: str) -> None:
    """Count one accepted request of ``user`` against ``scope``: on Redis one round trip
    (``get_usage`` takes two: an ``add``, then an ``incr``), elsewhere ``get_usage``."""
    rate = rates().get(scope)
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    if not rate or not hasattr(getattr(cache, "client", None), "get_client"):
        _usage(user, scope, increment=True)
        return
    if not getattr(settings, "RATELIMIT_ENABLE", True):
        return
    key, _, _ = _keys(user, {scope: rate})[scope]
    ttl = ratelimit_core._split_rate(rate)[1] + ratelimit_core.EXPIRATION_FUDGE
    try:
        key = cache.client.make_key(key)
        # What add-then-incr does, in one pipeline: the window's key starts at 0 with
        # django-ratelimit's expiry, unless it exists; then one is added.
        pipe = cache.client.get_client(write=True).pipeline(transaction=False)
        pipe.set(key, 0, ex=ttl, nx=True)
        pipe.incr(key)
        pipe.execute()
    except Exception:
        logger.warning("rate limit of %s not counted: the cache failed", scope, exc_info=True)


#: Check and count in one round trip (KEYS[1]: the window's key; ARGV: the limit, the
#: key's expiry): {0, used} when the budget is used up (nothing counted), else what
#: ``rate_limit_count`` does — the key starts at 0 with django-ratelimit's expiry
#: unless it exists, then one is added — and {1, used}.
_TAKE_LUA = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return {0, used} end
redis.call('SET', KEYS[1], 0, 'EX', ARGV[2], 'NX')
return {1, redis.call('INCR', KEYS[1])}
"""
_take_script = None


def _redis(cache):
    """The Redis client of a django-redis cache, or None (another backend)."""
    get_client = getattr(getattr(cache, "client", None), "get_client", None)
    return get_client(write=True) if get_client else None


def _take(client, key: str, limit: int, ttl: int) -> bool:
    """Run ``_TAKE_LUA`` (by its SHA; loaded the first time): whether it counted."""
    global _take_script
    if _take_script is None:
        _take_script = client.register_script(_TAKE_LUA)
    counted, _used = _take_script(keys=[key], args=[limit, ttl], client=client)
    return bool(counted)


@contextmanager
def rate_limit_taken(*, user: AbstractBaseUser, scope: str) -> Iterator[None]:
    """``rate_limit_check`` then the block, counted (``rate_limit_count``) unless it
    raised. On Redis the check and the count are one round trip (a Lua script, on
    django-ratelimit's keys and windows) before the block, and the count is given
    back if the block raises; elsewhere they are the two calls around it. The caller
    serialises requests of one user (the engine: under the user's row lock), so none
    sees another's count that is about to be given back."""
    rate = rates().get(scope)
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    client = _redis(cache) if rate else None
    if client is None:
        rate_limit_check(user=user, scope=scope)
        yield
        rate_limit_count(user=user, scope=scope)
        return
    if not getattr(settings, "RATELIMIT_ENABLE", True):
        yield
        return
    key, limit, window = _keys(user, {scope: rate})[scope]
    ttl = ratelimit_core._split_rate(rate)[1] + ratelimit_core.EXPIRATION_FUDGE
    try:
        key = cache.client.make_key(key)
        counted = _take(client, key, limit, ttl)
    except Exception:
        logger.warning("rate limit of %s not counted: the cache failed", scope, exc_info=True)
        yield
        return
    if not counted:
        time_left = window - int(ratelimit_core.time.time())
        raise RateLimited(
            f"Rate limit exceeded for {scope}: {limit} per window "
            f"({rate}). Try again in {time_left} s.",
            retry_after=time_left,
        )
    try:
        yield
    except BaseException:
        _give_back(client, key, scope)
        raise


def _give_back(client, key: str, scope: str) -> None:
    """Take back one count of a request that was refused after it was counted."""
    try:
        client.decr(key)
    except Exception:
        logger.warning("rate limit of %s: a refused request stays counted (the cache "
                       "failed)", scope, exc_info=True)  # fmt: skip


def _process_lock(name: str) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks[name]


@contextmanager
def user_lock(user: AbstractBaseUser) -> Iterator[None]:
    """Hold the user's rate-limit lock for the block: a Redis lock shared by every
    server when the cache is Redis, else a lock of this process. Raise RateLimited when
    it is not free within ``LOCK_WAIT_SECONDS``; fail open when Redis fails."""
    name = f"{GROUP_PREFIX}:user-lock:{user.pk}"
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


@contextmanager
def rate_limit(*, user: AbstractBaseUser, scope: str) -> Iterator[None]:
    """Raise RateLimited when ``user`` has used up ``scope``'s budget in this window;
    otherwise run the block and count one request once it succeeded (an exception
    counts nothing) — under the user's lock, so parallel requests cannot all pass the
    check before any counts. For requests that start no operation (validate); starting
    one is limited by the engine."""
    with user_lock(user) if rates().get(scope) else nullcontext():
        rate_limit_check(user=user, scope=scope)
        yield
        rate_limit_count(user=user, scope=scope)


def rate_limit_left(*, user: AbstractBaseUser, scope: str) -> dict[str, Any] | None:
    """{rate, limit, used, remaining, reset_seconds} of ``scope`` for ``user``, or None
    (no rate, or the cache failed: not limited)."""
    rate = rates().get(scope)
    return rate_limit_status(user=user, scopes={scope: rate} if rate else {}).get(scope)


def rate_limit_status(
    *, user: AbstractBaseUser, scopes: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """{scope: {rate, limit, used, remaining, reset_seconds}} for ``user``, of every
    scope (or of ``scopes``: {scope: rate}), read in one cache round trip."""
    if scopes is None:
        scopes = {scope: rate for scope, rate in rates().items() if rate}
    return {
        scope: {
            "rate": scopes[scope],
            "limit": usage["limit"],
            "used": usage["count"],
            "remaining": max(0, usage["limit"] - usage["count"]),
            "reset_seconds": max(0, usage["time_left"]),
        }
        for scope, usage in _read(user, scopes).items()
    }
