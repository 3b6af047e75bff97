"""An open WebSocket follows its user's access: deactivating or deleting the user, or
deleting the token a connection authenticated with, closes it (4401, after an
``access_revoked`` error) — at once through the channel layer, and in any case at the
next periodic re-check (``BULKOPS_WS_RECHECK_SECONDS``), which also catches changes
made without signals (``QuerySet.update``).

In process, through project.asgi, on the in-memory channel layer (the embedded
default); across two daphne servers sharing Redis: realtime/test_daphne.py.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from bulkops.engine import Selection, operation_create
from bulkops.tests.realtime.test_consumers import (
    communicator,
    connected,
    session_cookie,
    sync,
    token_connected,
)

pytestmark = pytest.mark.django_db(transaction=True)
REVOKED = 4401


@pytest.fixture(autouse=True)
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


async def cookie_connected(user):
    comm = await connected(communicator(cookie=await sync(session_cookie, user)))
    assert await comm.receive_json_from() == {"type": "authenticated", "user_id": user.pk}
    return comm


async def assert_revoked(comm, timeout: float = 5) -> None:
    """The connection is told why, then closed 4401."""
    error = await comm.receive_json_from(timeout=timeout)
    assert (error["type"], error["code"]) == ("error", "access_revoked"), error
    assert await comm.receive_output(timeout=timeout) == {
        "type": "websocket.close",
        "code": REVOKED,
    }


async def assert_open(comm) -> None:
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from() == {"type": "pong"}


def deactivate(user) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])


async def test_deactivating_the_user_closes_every_connection_of_theirs(owner, stranger):
    by_token, by_cookie = await token_connected(owner), await cookie_connected(owner)
    theirs = await token_connected(stranger)
    try:
        await sync(deactivate, owner)
        await assert_revoked(by_token)
        await assert_revoked(by_cookie)
        await assert_open(theirs)
    finally:
        for comm in (by_token, by_cookie, theirs):
            await comm.disconnect()


async def test_deleting_the_token_closes_the_connections_it_authenticated(owner, stranger):
    by_token, by_cookie = await token_connected(owner), await cookie_connected(owner)
    theirs = await token_connected(stranger)
    try:
        await sync(lambda: Token.objects.get(user=owner).delete())
        await assert_revoked(by_token)
        await assert_open(by_cookie)  # a session cookie is not the token
        await assert_open(theirs)
    finally:
        for comm in (by_token, by_cookie, theirs):
            await comm.disconnect()


async def test_deleting_the_user_closes_their_connections(make_user):
    doomed = await sync(make_user, "doomed")
    comm = await token_connected(doomed)
    try:
        await sync(get_user_model().objects.filter(pk=doomed.pk).delete)
        await assert_revoked(comm)
    finally:
        await comm.disconnect()


async def test_the_periodic_recheck_closes_what_no_signal_announced(owner, settings):
    """``QuerySet.update`` sends no signal: the re-check finds the user inactive."""
    settings.BULKOPS_WS_RECHECK_SECONDS = 0.2
    by_token, by_cookie = await token_connected(owner), await cookie_connected(owner)
    try:
        await assert_open(by_token)
        await sync(get_user_model().objects.filter(pk=owner.pk).update, is_active=False)
        await assert_revoked(by_token)
        await assert_revoked(by_cookie)
    finally:
        for comm in (by_token, by_cookie):
            await comm.disconnect()


async def test_the_periodic_recheck_finds_a_token_deleted_without_signals(owner, settings):
    settings.BULKOPS_WS_RECHECK_SECONDS = 0.2
    comm = await token_connected(owner)
    try:
        await sync(Token.objects.filter(user=owner)._raw_delete, "default")
        await assert_revoked(comm)
    finally:
        await comm.disconnect()


async def test_no_event_reaches_a_revoked_connection(owner, make_session):
    """The issue's attack: after the user is deactivated, a new operation's events must
    not arrive (the connection is closed before they are published)."""
    await sync(make_session, owner, id="s1")
    comm = await token_connected(owner)
    try:
        await sync(deactivate, owner)
        await assert_revoked(comm)
        await sync(
            operation_create, user=owner, action="close", selection=Selection(session_ids=["s1"])
        )
        assert await comm.receive_nothing(timeout=0.5)
    finally:
        await comm.disconnect()


async def test_a_save_of_an_active_user_closes_nothing(owner):
    comm = await token_connected(owner)
    try:
        owner.first_name = "Still here"
        await database_sync_to_async(owner.save)()
        await assert_open(comm)
        assert await comm.receive_nothing(timeout=0.3)
    finally:
        await comm.disconnect()
