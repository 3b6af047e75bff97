"""Redis unreachable when a client connects (issue 13): the channel layer cannot give
the connection its channel, or cannot join it to its user's group. The client is told
``unavailable`` and the connection closed 1013 ("try again later") — never a 1011 with a
traceback — and it holds no connection slot afterwards.

The layer points at a port where nothing listens, so no real Redis outage is needed.
"""

from __future__ import annotations

import logging

import pytest
import redis
from channels.layers import InMemoryChannelLayer, channel_layers
from rest_framework.authtoken.models import Token

from bulkops.realtime.connections import LocalConnections, RedisConnections
from bulkops.realtime.consumers import BulkOperationsConsumer
from bulkops.tests.realtime.test_consumers import communicator, connected, session_cookie, sync
from bulkops.tests.support.helpers import free_port

pytestmark = pytest.mark.django_db(transaction=True)


class GroupsDownLayer(InMemoryChannelLayer):
    """Makes channels, but cannot add one to a group (Redis gone since)."""

    async def group_add(self, group, channel):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


@pytest.fixture
def slots(monkeypatch) -> LocalConnections:
    """The connection count of these tests, to show nothing is left held."""
    local = LocalConnections()
    monkeypatch.setattr(BulkOperationsConsumer, "connection_registry", staticmethod(lambda: local))
    return local


@pytest.fixture
def layer(settings):
    """``layer(backend, **config)`` replaces the test's channel layer."""

    def replace(backend: str, **config) -> None:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": backend, "CONFIG": config}}
        channel_layers.backends.clear()

    yield replace
    channel_layers.backends.clear()


def assert_logged_a_warning_and_no_traceback(caplog) -> None:
    warnings = [r for r in caplog.records if r.name == "bulkops.realtime"]
    assert warnings and all(r.levelno == logging.WARNING for r in warnings)
    assert "unavailable" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_no_channel_for_the_connection_is_unavailable_and_close_1013(
    owner, layer, slots, caplog
):
    """The pub/sub layer (REDIS_URL's) subscribes the connection's own channel before
    the handshake is even answered: even an anonymous client is told."""
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    layer("channels_redis.pubsub.RedisPubSubChannelLayer", hosts=[nothing_there])
    for cookie in ("", await sync(session_cookie, owner)):
        comm = await connected(communicator(cookie=cookie))
        error = await comm.receive_json_from()
        assert (error["type"], error["code"]) == ("error", "unavailable")
        assert await comm.receive_output() == {"type": "websocket.close", "code": 1013}
    assert_logged_a_warning_and_no_traceback(caplog)
    assert slots.slots == {}


async def test_a_group_that_cannot_be_joined_is_unavailable_and_close_1013(
    owner, layer, slots, caplog
):
    layer(f"{__name__}.GroupsDownLayer")
    comm = await connected(communicator(cookie=await sync(session_cookie, owner)))
    error = await comm.receive_json_from()
    assert (error["type"], error["code"]) == ("error", "unavailable")
    assert await comm.receive_output() == {"type": "websocket.close", "code": 1013}
    await comm.disconnect()
    assert_logged_a_warning_and_no_traceback(caplog)
    assert slots.slots == {}  # taken for the join, freed when it failed


async def test_the_same_after_token_authentication(owner, layer, slots, caplog):
    token = await sync(lambda: Token.objects.create(user=owner).key)
    layer(f"{__name__}.GroupsDownLayer")
    comm = await connected(communicator())
    await comm.send_json_to({"type": "auth", "token": token})
    assert (await comm.receive_json_from())["code"] == "unavailable"
    assert await comm.receive_output() == {"type": "websocket.close", "code": 1013}
    await comm.disconnect()
    assert_logged_a_warning_and_no_traceback(caplog)
    assert slots.slots == {}


async def test_a_connection_count_that_cannot_be_read_is_unavailable_and_close_1013(
    owner, monkeypatch, caplog
):
    """The count lives in Redis with REDIS_URL: Redis away refuses (fail closed), as
    the channel layer on the same Redis would."""
    nowhere = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)
    slots = RedisConnections(nowhere, "test-nowhere")
    monkeypatch.setattr(BulkOperationsConsumer, "connection_registry", staticmethod(lambda: slots))
    comm = await connected(communicator(cookie=await sync(session_cookie, owner)))
    assert (await comm.receive_json_from())["code"] == "unavailable"
    assert await comm.receive_output() == {"type": "websocket.close", "code": 1013}
    await comm.disconnect()
    assert_logged_a_warning_and_no_traceback(caplog)
    assert any("the connection count is unavailable" in r.getMessage() for r in caplog.records)
