"""WebSocket connections per user (issue 13): ``BULKOPS_MAX_WS_CONNECTIONS_PER_USER`` live
connections at most, then ``too_many_connections`` and close 4429. Counted in this
process's memory, or in Redis across servers when REDIS_URL is set (real Redis here, on
a key prefix of the test's own); a crashed server's connections lapse by themselves."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator

import pytest
import redis
from channels.db import database_sync_to_async
from rest_framework.authtoken.models import Token

from bulkops.realtime.connections import LocalConnections, RedisConnections, registry
from bulkops.realtime.consumers import BulkOperationsConsumer
from bulkops.tests.realtime.test_consumers import (
    communicator,
    connected,
    session_cookie,
    sync,
    wait_for_condition,
)
from bulkops.tests.support.helpers import REDIS_URL, redis_available, require
from bulkops.tests.support.websocket import WAIT

#: The lapse test's ttl: real seconds (Redis' clock), so longer than a loaded machine's
#: pause between two calls.
LAPSE_TTL = 2.0


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    require(redis_available(), "Redis")
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"test-ws-connections-{secrets.token_hex(6)}"
    yield name
    keys = list(redis_client.scan_iter(f"{name}:*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(params=["local", "redis"])
def store(request):
    """``store(ttl=…)``: a fresh connection count, in memory or in Redis."""
    if request.param == "local":
        return lambda ttl=60.0: LocalConnections(ttl=ttl)
    client = request.getfixturevalue("redis_client")
    prefix = request.getfixturevalue("prefix")
    return lambda ttl=60.0: RedisConnections(client, prefix, ttl=ttl)


# --- the count ------------------------------------------------------------------------------
async def test_a_user_holds_at_most_the_limit_and_a_freed_slot_is_taken_again(store):
    slots = store()
    assert [await slots.acquire(1, f"c{i}", 2) for i in range(3)] == [True, True, False]
    assert await slots.acquire(2, "other-user", 2)  # per user
    await slots.release(1, "c0")
    await slots.release(1, "c0")  # twice is harmless
    assert await slots.acquire(1, "c3", 2)
    assert not await slots.acquire(1, "c4", 2)


async def test_a_slot_not_refreshed_lapses_and_a_refreshed_one_does_not(store):
    """A crashed server stops refreshing: its slots are free after ``ttl``. (Redis keeps
    the time: the test waits until "crashed" has lapsed, refreshing "kept" meanwhile.)"""
    slots = store(ttl=LAPSE_TTL)
    assert await slots.acquire(1, "kept", 2)
    assert await slots.acquire(1, "crashed", 2)
    deadline = time.monotonic() + WAIT
    while True:
        await slots.refresh(1, "kept")
        if await slots.acquire(1, "new", 2):  # "crashed" lapsed, "kept" did not
            break
        assert time.monotonic() < deadline, '"crashed" never lapsed'
        await asyncio.sleep(LAPSE_TTL / 10)
    assert not await slots.acquire(1, "one-too-many", 2)


async def test_a_burst_of_handshakes_never_overshoots(store):
    slots = store()
    taken = await asyncio.gather(*(slots.acquire(1, f"c{i}", 5) for i in range(40)))
    assert taken.count(True) == 5


async def test_redis_is_one_count_for_every_server(redis_client, prefix):
    one, two = RedisConnections(redis_client, prefix), RedisConnections(redis_client, prefix)
    assert await one.acquire(1, "a", 2)
    assert await two.acquire(1, "b", 2)
    assert not await one.acquire(1, "c", 2)
    await one.release(1, "a")
    assert await two.acquire(1, "c", 2)
    # Nothing outlives a user's last slot by much: the key expires with it.
    assert 0 < redis_client.ttl(f"{prefix}:1") <= 61


def test_without_redis_the_count_is_this_processs(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert isinstance(registry(), LocalConnections)


def test_with_redis_the_count_is_in_redis_under_the_caches_prefix(settings, redis_client):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "test-registry",
        }
    }
    found = registry()
    assert isinstance(found, RedisConnections)
    assert found.key(7) == "test-registry:1:ws-connections:7"


# --- through the consumer -------------------------------------------------------------------
@pytest.fixture
def capped(settings, monkeypatch, store):
    """Two connections per user, counted by ``store``."""
    settings.BULKOPS_MAX_WS_CONNECTIONS_PER_USER = 2
    slots = store()
    monkeypatch.setattr(BulkOperationsConsumer, "connection_registry", staticmethod(lambda: slots))
    return slots


async def authenticated(user, cookie: str):
    comm = await connected(communicator(cookie=cookie))
    assert await comm.receive_json_from() == {"type": "authenticated", "user_id": user.pk}
    return comm


@pytest.mark.django_db(transaction=True)
async def test_one_connection_over_the_limit_is_told_and_closed_4429(owner, stranger, capped):
    cookie = await sync(session_cookie, owner)
    held = [await authenticated(owner, cookie) for _ in range(2)]
    refused = await connected(communicator(cookie=cookie))
    error = await refused.receive_json_from()
    assert (error["type"], error["code"]) == ("error", "too_many_connections")
    assert "At most 2 WebSocket connections" in error["message"]
    assert await refused.receive_output() == {"type": "websocket.close", "code": 4429}
    await refused.disconnect()
    # Someone else is not affected; the held connections still work.
    other = await authenticated(stranger, await sync(session_cookie, stranger))
    await held[0].send_json_to({"type": "ping"})
    assert await held[0].receive_json_from() == {"type": "pong"}
    # Closing one frees its slot.
    await held[0].disconnect()
    again = await authenticated(owner, cookie)
    for comm in (held[1], other, again):
        await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_token_authentication_is_capped_too_and_anonymous_connections_do_not_count(
    owner, capped
):
    token = await database_sync_to_async(lambda: Token.objects.create(user=owner).key)()
    anonymous = [await connected(communicator()) for _ in range(3)]
    for comm in anonymous[:2]:
        await comm.send_json_to({"type": "auth", "token": token})
        assert (await comm.receive_json_from())["type"] == "authenticated"
    await anonymous[2].send_json_to({"type": "auth", "token": token})
    assert (await anonymous[2].receive_json_from())["code"] == "too_many_connections"
    assert await anonymous[2].receive_output() == {"type": "websocket.close", "code": 4429}
    for comm in anonymous:
        await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_live_connection_keeps_its_slot_past_the_ttl(owner, settings, monkeypatch):
    """The slots' clock is the test's: it moves on past the ttl, in steps shorter than
    it, each waiting for the connection's keeper (every ttl/3 = 0.1 s) to refresh."""
    settings.BULKOPS_MAX_WS_CONNECTIONS_PER_USER = 1
    clock = {"now": 1000.0}
    slots = LocalConnections(ttl=0.3, clock=lambda: clock["now"])
    monkeypatch.setattr(BulkOperationsConsumer, "connection_registry", staticmethod(lambda: slots))
    cookie = await sync(session_cookie, owner)
    held = await authenticated(owner, cookie)
    for _ in range(4):  # 0.8 s past the acquire: lapsed, had nothing refreshed it
        clock["now"] += 0.2
        await wait_for_condition(
            lambda: max(slots.slots[owner.pk].values()) == clock["now"] + 0.3, "a refresh"
        )
    refused = await connected(communicator(cookie=cookie))
    assert (await refused.receive_json_from())["code"] == "too_many_connections"
    await refused.disconnect()
    await held.disconnect()
    assert slots.slots == {}
