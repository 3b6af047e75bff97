"""Open WebSocket connections per user, for ``BULKOPS_MAX_WS_CONNECTIONS_PER_USER``.

Each connection holds a *slot*: an entry with an expiry that the connection refreshes
while it lives, so a server that dies without closing its connections frees their slots
within ``ttl`` seconds. Two stores, one algorithm:

* ``RedisConnections`` when the default cache is django-redis (``REDIS_URL``): one sorted
  set per user (connection id → expiry, on Redis' own clock), shared by every server and
  checked-and-added in one Lua script, so a burst of handshakes cannot overshoot;
* ``LocalConnections`` otherwise: the embedded default is one process, so its memory is
  the whole truth.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from typing import Protocol

from django.core.cache import caches
from django_redis.cache import RedisCache

logger = logging.getLogger("bulkops.realtime")

#: Seconds a slot lives without a refresh (a crashed server's slots are free after it).
SLOT_TTL = 60.0


class Connections(Protocol):
    ttl: float

    async def acquire(self, user_id: int, connection_id: str, limit: int) -> bool:
        """Take a slot for ``connection_id``; False when ``user_id`` already has
        ``limit`` live ones (nothing is taken then)."""

    async def refresh(self, user_id: int, connection_id: str) -> None:
        """Push the slot's expiry ``ttl`` seconds ahead (taking it again if it lapsed)."""

    async def release(self, user_id: int, connection_id: str) -> None:
        """Free the slot (nothing happens when it is not held)."""


class LocalConnections:
    """This process's connections (the embedded default: one server)."""

    def __init__(self, ttl: float = SLOT_TTL, clock=time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self.slots: dict[int, dict[str, float]] = {}
        self.lock = threading.Lock()

    def _live(self, user_id: int) -> dict[str, float]:
        now = self.clock()
        live = {c: until for c, until in self.slots.get(user_id, {}).items() if until > now}
        self.slots[user_id] = live
        return live

    async def acquire(self, user_id: int, connection_id: str, limit: int) -> bool:
        with self.lock:
            live = self._live(user_id)
            if len(live) >= limit:
                return False
            live[connection_id] = self.clock() + self.ttl
            return True

    async def refresh(self, user_id: int, connection_id: str) -> None:
        with self.lock:
            self._live(user_id)[connection_id] = self.clock() + self.ttl

    async def release(self, user_id: int, connection_id: str) -> None:
        with self.lock:
            live = self._live(user_id)
            live.pop(connection_id, None)
            if not live:
                del self.slots[user_id]


#: KEYS[1] the user's set; ARGV: connection id, limit, ttl. Drops lapsed slots, then
#: adds this one unless the user already holds ``limit``. 1 taken, 0 refused.
ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
#: KEYS[1] the user's set; ARGV: connection id, ttl, the key's ttl in whole seconds.
REFRESH = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisConnections:
    """Every server's connections, in Redis (``client``: a redis-py client; keys
    ``<prefix>:<user id>``). Calls run on a thread: the client is synchronous."""

    def __init__(self, client, prefix: str, ttl: float = SLOT_TTL) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.key_ttl = math.ceil(ttl) + 1
        self.acquire_script = client.register_script(ACQUIRE)
        self.refresh_script = client.register_script(REFRESH)

    def key(self, user_id: int) -> str:
        return f"{self.prefix}:{user_id}"

    async def acquire(self, user_id: int, connection_id: str, limit: int) -> bool:
        args = [connection_id, limit, self.ttl, self.key_ttl]
        taken = await asyncio.to_thread(self.acquire_script, keys=[self.key(user_id)], args=args)
        return bool(taken)

    async def refresh(self, user_id: int, connection_id: str) -> None:
        args = [connection_id, self.ttl, self.key_ttl]
        await asyncio.to_thread(self.refresh_script, keys=[self.key(user_id)], args=args)

    async def release(self, user_id: int, connection_id: str) -> None:
        await asyncio.to_thread(self.client.zrem, self.key(user_id), connection_id)


_local = LocalConnections()


def registry() -> Connections:
    """Where slots are counted: Redis when the default cache is django-redis (under the
    cache's KEY_PREFIX), else this process's memory."""
    cache = caches["default"]
    if not isinstance(cache, RedisCache):
        return _local
    from django_redis import get_redis_connection

    return RedisConnections(get_redis_connection("default"), cache.make_key("ws-connections"))


class Slot:
    """One connection's hold on one of its user's slots: taken, kept fresh, freed."""

    def __init__(self, connections: Connections, user_id: int) -> None:
        self.connections = connections
        self.user_id = user_id
        self.connection_id = uuid.uuid4().hex
        self.keeper: asyncio.Task | None = None

    async def take(self, limit: int) -> bool:
        """Whether one of ``limit`` slots was free; if so it is held, and refreshed every
        third of its ttl, until ``free()``. Raises what the store raises (Redis away)."""
        if not await self.connections.acquire(self.user_id, self.connection_id, limit):
            return False
        self.keeper = asyncio.ensure_future(self._keep())
        return True

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.connections.ttl / 3)
            try:
                await self.connections.refresh(self.user_id, self.connection_id)
            except Exception as exc:  # the store's errors (Redis away): retry next time
                logger.warning("WebSocket connection slot not refreshed: %s", exc)

    async def free(self) -> None:
        """Let the slot go (once; when the store cannot be reached, it lapses by itself)."""
        if self.keeper is None:
            return
        self.keeper.cancel()
        self.keeper = None
        try:
            await self.connections.release(self.user_id, self.connection_id)
        except Exception as exc:
            logger.warning(
                "WebSocket connection slot not freed (it lapses within %.0f s): %s",
                self.connections.ttl,
                exc,
            )
