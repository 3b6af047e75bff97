"""The WebSocket consumer (DESIGN.md §6), through the real ASGI stack of project.asgi:
origin check, session middleware, auth middleware, routing, consumer, channel layer
(in-memory, or Redis when REDIS_URL is set)."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client
from rest_framework.authtoken.models import Token

from bulkops import events
from bulkops.engine import Selection, operation_create
from bulkops.realtime.consumers import BulkOperationsConsumer
from bulkops.tests.support.helpers import run_worker
from bulkops.tests.support.websocket import WAIT, Communicator
from project.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def communicator(
    path: str = "/ws/bulk/", *, origin: str | None = "http://testserver", cookie: str = ""
) -> Communicator:
    headers = [(b"host", b"testserver")]
    if origin:
        headers.append((b"origin", origin.encode()))
    if cookie:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return Communicator(application, path, headers=headers)


async def sync(func, *args, **kwargs):
    """Run sync (ORM) code from the test's event loop."""
    return await database_sync_to_async(func)(*args, **kwargs)


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def receive_until(comm: Communicator, kind: str, timeout: float = WAIT) -> list:
    """Every message up to and including the first of type ``kind``."""
    seen = []
    while True:
        message = await comm.receive_json_from(timeout=timeout)
        seen.append(message)
        if message["type"] == kind:
            return seen


async def wait_for_condition(predicate, what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` from the event loop until it holds (fail after ``timeout``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def connected(comm: Communicator) -> Communicator:
    ok, _ = await comm.connect()
    assert ok
    return comm


async def token_connected(user, path: str = "/ws/bulk/") -> Communicator:
    token = await database_sync_to_async(lambda: Token.objects.create(user=user).key)()
    comm = await connected(communicator(path))
    await comm.send_json_to({"type": "auth", "token": token})
    assert await comm.receive_json_from() == {"type": "authenticated", "user_id": user.pk}
    return comm


@database_sync_to_async
def create_close(user, ids):
    return operation_create(
        user=user, action="close", selection=Selection(session_ids=ids)
    ).operation


@database_sync_to_async
def publish(op, kind="bulk_operation_progress"):
    op.refresh_from_db()
    events.publish_operation(op, kind)


@pytest.fixture
def short_auth_timeout(monkeypatch):
    monkeypatch.setattr(BulkOperationsConsumer, "auth_timeout", 0.2)


# --- authentication ----------------------------------------------------------------------------
async def test_session_cookie_authenticates_and_events_of_own_operations_arrive(
    owner, make_session
):
    await sync(make_session, owner, id="s1")
    comm = await connected(communicator(cookie=await sync(session_cookie, owner)))
    try:
        assert await comm.receive_json_from() == {"type": "authenticated", "user_id": owner.pk}
        op = await create_close(owner, ["s1"])
        await publish(op)
        event = (await receive_until(comm, "bulk_operation_progress"))[-1]
        # Flat: the representation at the top level, as the original client reads it.
        assert event["operation_id"] == op.pk
        assert event["total"] == 1 and "progress" in event and "version" in event
    finally:
        await comm.disconnect()


async def test_token_message_authenticates(owner, make_session):
    await sync(make_session, owner, id="s1")
    comm = await token_connected(owner)
    try:
        op = await create_close(owner, ["s1"])
        await publish(op)
        event = (await receive_until(comm, "bulk_operation_progress"))[-1]
        assert event["operation_id"] == op.pk
    finally:
        await comm.disconnect()


async def test_no_authentication_in_time_closes_4401(db, short_auth_timeout):
    comm = await connected(communicator())
    error = await comm.receive_json_from()
    assert (error["type"], error["code"]) == ("error", "not_authenticated")
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4401}


async def test_anonymous_is_refused_everything_but_auth_and_gets_no_events(
    owner, make_session, monkeypatch
):
    # The deadline's error is the end marker: long enough for the subscribe and the
    # publish before it to happen first on a loaded machine.
    monkeypatch.setattr(BulkOperationsConsumer, "auth_timeout", 3.0)
    await sync(make_session, owner, id="s1")
    op = await create_close(owner, ["s1"])
    comm = await connected(communicator())
    try:
        await comm.send_json_to({"type": "subscribe", "operation_id": op.pk})
        error = await comm.receive_json_from()
        assert error["code"] == "not_authenticated"
        await publish(op)
        # Nothing else until the deadline closes it: no event, no snapshot.
        error = await comm.receive_json_from()
        assert error["code"] == "not_authenticated"
        assert (await comm.receive_output())["code"] == 4401
    finally:
        await comm.disconnect()


async def test_bad_token_closes_4401(db):
    comm = await connected(communicator())
    await comm.send_json_to({"type": "auth", "token": "not-a-token"})
    error = await comm.receive_json_from()
    assert (error["type"], error["code"]) == ("error", "authentication_failed")
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4401}


async def test_auth_with_a_non_string_token_is_an_error_and_the_connection_stays(db):
    comm = await connected(communicator())
    try:
        await comm.send_json_to({"type": "auth", "token": 123})
        assert (await comm.receive_json_from())["code"] == "missing_field"
        await comm.send_json_to({"type": "ping"})
        assert await comm.receive_json_from() == {"type": "pong"}
    finally:
        await comm.disconnect()


@pytest.mark.parametrize("ref", ["{own}", "user-{own}"])
async def test_own_user_path_is_accepted(owner, ref):
    comm = await connected(
        communicator(
            f"/ws/bulk/{ref.format(own=owner.pk)}/", cookie=await sync(session_cookie, owner)
        )
    )
    try:
        assert await comm.receive_json_from() == {"type": "authenticated", "user_id": owner.pk}
    finally:
        await comm.disconnect()


@pytest.mark.parametrize("ref", ["{other}", "user-{other}", "nobody", "user-x"])
async def test_someone_elses_user_path_closes_4403(owner, stranger, ref):
    path = f"/ws/bulk/{ref.format(other=stranger.pk)}/"
    comm = await connected(communicator(path, cookie=await sync(session_cookie, owner)))
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4403}


async def test_someone_elses_user_path_closes_4403_after_token_auth(owner, stranger):
    token = await database_sync_to_async(lambda: Token.objects.create(user=owner).key)()
    comm = await connected(communicator(f"/ws/bulk/{stranger.pk}/"))
    await comm.send_json_to({"type": "auth", "token": token})
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4403}


@pytest.mark.parametrize("origin", ["http://evil.example", "https://testserver.evil.example", None])
async def test_foreign_or_missing_origin_is_refused_before_the_consumer(owner, origin):
    comm = communicator(origin=origin, cookie=await sync(session_cookie, owner))
    ok, _ = await comm.connect()
    assert not ok


@pytest.mark.parametrize("path", ["/ws/bulk", "/ws/nope", "/ws/bulk/1/extra/", "/"])
async def test_an_unknown_path_is_told_not_found_and_closed_4404(db, path):
    comm = await connected(communicator(path))
    error = await comm.receive_json_from()
    assert (error["type"], error["code"]) == ("error", "not_found")
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4404}


# --- subscribe, unsubscribe, ping --------------------------------------------------------------
async def test_subscribe_to_someone_elses_operation_is_not_found_and_leaks_nothing(
    owner, stranger, make_session
):
    await sync(make_session, stranger, id="theirs")
    await sync(make_session, owner, id="mine")
    theirs = await create_close(stranger, ["theirs"])
    ours = await create_close(owner, ["mine"])
    comm = await token_connected(owner)
    try:
        await comm.send_json_to({"type": "subscribe", "operation_id": theirs.pk})
        foreign = await comm.receive_json_from()
        await comm.send_json_to({"type": "subscribe", "operation_id": "op-doesnotexist"})
        unknown = await comm.receive_json_from()
        assert foreign["code"] == unknown["code"] == "not_found"
        assert foreign["message"] == unknown["message"]
        assert set(foreign) == {"type", "code", "message", "operation_id"}
        # Their event, then one of the owner's own, which this connection receives: had
        # theirs reached it, it would have come first (one channel, in order).
        await publish(theirs)
        await publish(ours)
        event = await comm.receive_json_from()
        assert (event["type"], event["operation_id"]) == ("bulk_operation_progress", ours.pk)
    finally:
        await comm.disconnect()


async def test_late_subscribe_gets_the_snapshot_of_a_finished_operation(owner, make_session):
    await sync(make_session, owner, id="s1")
    await sync(make_session, owner, id="s2", status="closed")
    op = await create_close(owner, ["s1", "s2"])
    await database_sync_to_async(run_worker)()
    comm = await token_connected(owner)
    try:
        # Events of the run are long gone; the snapshot is the truth.
        await comm.send_json_to({"type": "subscribe", "operation_id": op.pk})
        message = (await receive_until(comm, "subscribed"))[-1]
        snapshot = message["operation"]
        assert snapshot["operation_id"] == op.pk
        assert (snapshot["status"], snapshot["progress"], snapshot["processed"]) == (
            "completed",
            100,
            2,
        )
        assert (snapshot["succeeded"], snapshot["skipped"]) == (1, 1)
    finally:
        await comm.disconnect()


async def test_subscribe_then_live_events_until_the_final_one(owner, make_session):
    for i in range(3):
        await sync(make_session, owner, id=f"s{i}")
    op = await create_close(owner, ["s0", "s1", "s2"])
    comm = await token_connected(owner)
    try:
        await comm.send_json_to({"type": "subscribe", "operation_id": op.pk})
        snapshot = (await receive_until(comm, "subscribed"))[-1]["operation"]
        assert snapshot["status"] == "pending"
        await database_sync_to_async(run_worker)()
        seen = await receive_until(comm, "bulk_operation_completed")
        kinds = [m["type"] for m in seen]
        assert "bulk_operation_started" in kinds and "sessions_updated" in kinds
        updated = next(m for m in seen if m["type"] == "sessions_updated")
        assert updated == {
            "type": "sessions_updated",
            "operation_id": op.pk,
            "session_ids": ["s0", "s1", "s2"],
            "status": "closed",
        }
        final = seen[-1]
        assert (final["status"], final["succeeded"], final["progress"]) == ("completed", 3, 100)
        versions = [m["version"] for m in seen if m["type"].startswith("bulk_operation")]
        assert versions == sorted(versions) and final["version"] > snapshot["version"]
    finally:
        await comm.disconnect()


async def test_unsubscribe(owner, make_session):
    await sync(make_session, owner, id="s1")
    op = await create_close(owner, ["s1"])
    comm = await token_connected(owner)
    try:
        await comm.send_json_to({"type": "unsubscribe", "operation_id": op.pk})
        assert (await comm.receive_json_from())["code"] == "not_found"
        await comm.send_json_to({"type": "subscribe", "operation_id": op.pk})
        await receive_until(comm, "subscribed")
        await comm.send_json_to({"type": "unsubscribe", "operation_id": op.pk})
        assert (await receive_until(comm, "unsubscribed"))[-1] == {
            "type": "unsubscribed",
            "operation_id": op.pk,
        }
    finally:
        await comm.disconnect()


async def test_ping_pong_before_and_after_authentication(owner):
    comm = await connected(communicator())
    try:
        await comm.send_json_to({"type": "ping"})
        assert await comm.receive_json_from() == {"type": "pong"}
    finally:
        await comm.disconnect()
    comm = await token_connected(owner)
    try:
        await comm.send_json_to({"type": "ping"})
        assert await comm.receive_json_from() == {"type": "pong"}
    finally:
        await comm.disconnect()


async def test_already_authenticated_auth_is_an_error(owner):
    comm = await token_connected(owner)
    try:
        await comm.send_json_to({"type": "auth", "token": "x"})
        assert (await comm.receive_json_from())["code"] == "already_authenticated"
    finally:
        await comm.disconnect()


# --- malformed frames and limits -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"text_data": "{not json"}, "invalid_json"),
        ({"text_data": "[1, 2]"}, "invalid_message"),
        ({"text_data": '"ping"'}, "invalid_message"),
        ({"text_data": "{}"}, "invalid_message"),
        ({"text_data": '{"type": 5}'}, "invalid_message"),
        ({"text_data": '{"type": "explode"}'}, "unknown_type"),
        ({"text_data": '{"type": "subscribe"}'}, "missing_field"),
        ({"text_data": '{"type": "subscribe", "operation_id": 7}'}, "missing_field"),
        ({"text_data": '{"type": "unsubscribe"}'}, "missing_field"),
        ({"bytes_data": b"\x00\x01"}, "invalid_message"),
        ({"text_data": json.dumps({"type": "ping", "pad": "x" * 5000})}, "too_large"),
        # Issue 13: these used to end the connection with 1011.
        ({"text_data": "[" * 2000 + "]" * 2000}, "invalid_json"),
        ({"text_data": '{"type": "subscribe", "operation_id": "\\u0000"}'}, "not_found"),
        (
            {
                "text_data": json.dumps(
                    {"type": "subscribe", "operation_id": "op-" + "0" * 32 + "\n"}
                )
            },
            "not_found",
        ),
        (
            {"text_data": json.dumps({"type": "subscribe", "operation_id": "op-" + "A" * 32})},
            "not_found",
        ),
    ],
)
async def test_malformed_frames_get_an_error_and_the_connection_stays_usable(owner, frame, code):
    comm = await token_connected(owner)
    try:
        await comm.send_to(**frame)
        error = await comm.receive_json_from()
        assert (error["type"], error["code"]) == ("error", code)
        assert isinstance(error["message"], str) and error["message"]
        await comm.send_json_to({"type": "ping"})
        assert await comm.receive_json_from() == {"type": "pong"}
    finally:
        await comm.disconnect()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "subscribe", "operation_id": "op-\u0000"},
        {"type": "subscribe", "operation_id": "op-" + "0" * 31 + "\u0000"},
        {"type": "subscribe", "operation_id": "op-" + "0" * 33},
    ],
)
async def test_a_malformed_operation_id_never_reaches_the_database(owner, monkeypatch, message):
    def no_query(**kwargs):
        raise AssertionError("the database was asked about a malformed id")

    monkeypatch.setattr("bulkops.realtime.consumers.operation_get_for_user", no_query)
    comm = await token_connected(owner)
    try:
        await comm.send_json_to(message)
        error = await comm.receive_json_from()
        assert (error["code"], error["message"]) == ("not_found", "No such operation.")
        await comm.send_json_to({"type": "ping"})
        assert await comm.receive_json_from() == {"type": "pong"}
    finally:
        await comm.disconnect()


@pytest.mark.parametrize(
    "token", ["\u0000abc", "0" * 39 + "\u0000", "0" * 39 + "\n", "F" * 40, "0" * 41]
)
async def test_a_malformed_token_is_refused_4401_without_a_query(db, monkeypatch, token):
    async def no_query(token):
        raise AssertionError("the database was asked about a malformed token")

    monkeypatch.setattr("bulkops.realtime.consumers._token_owner", no_query)
    comm = await connected(communicator())
    await comm.send_json_to({"type": "auth", "token": token})
    error = await comm.receive_json_from()
    assert (error["type"], error["code"]) == ("error", "authentication_failed")
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4401}


async def test_subscriptions_per_connection_are_capped(owner, make_session, monkeypatch):
    monkeypatch.setattr(BulkOperationsConsumer, "max_subscriptions", 2)
    ops = []
    for i in range(3):
        await sync(make_session, owner, id=f"s{i}")
        ops.append(await create_close(owner, [f"s{i}"]))
    comm = await token_connected(owner)
    try:
        for op in ops[:2]:
            await comm.send_json_to({"type": "subscribe", "operation_id": op.pk})
            await receive_until(comm, "subscribed")
        # Subscribing again to one already held is fine; a third one is not.
        await comm.send_json_to({"type": "subscribe", "operation_id": ops[0].pk})
        await receive_until(comm, "subscribed")
        await comm.send_json_to({"type": "subscribe", "operation_id": ops[2].pk})
        error = (await receive_until(comm, "error"))[-1]
        assert error["code"] == "too_many_subscriptions"
        await comm.send_json_to({"type": "unsubscribe", "operation_id": ops[0].pk})
        await receive_until(comm, "unsubscribed")
        await comm.send_json_to({"type": "subscribe", "operation_id": ops[2].pk})
        assert (await receive_until(comm, "subscribed"))[-1]["operation"]["operation_id"] == (
            ops[2].pk
        )
    finally:
        await comm.disconnect()


async def test_messages_per_second_are_capped_and_the_excess_dropped(owner, monkeypatch):
    monkeypatch.setattr(BulkOperationsConsumer, "max_messages_per_second", 5)
    clock = {"now": 1000.0, "read": 0}

    def tick() -> float:
        clock["read"] += 1  # once per client message, when the consumer takes it
        return clock["now"]

    monkeypatch.setattr(BulkOperationsConsumer, "clock", staticmethod(tick))
    comm = await token_connected(owner)
    clock["now"] += 1.0  # a fresh window (the auth message counted in the first one)
    try:
        taken = clock["read"]
        for _ in range(12):
            await comm.send_json_to({"type": "ping"})
        await wait_for_condition(lambda: clock["read"] == taken + 12, "the 12 pings to be taken")
        # A fresh window, and a message with an answer of its own: everything before
        # that answer is what the 12 pings got.
        clock["now"] += 1.0
        await comm.send_json_to({"type": "unsubscribe", "operation_id": "op-marker"})
        answers = await receive_until(comm, "error")
        while answers[-1].get("operation_id") != "op-marker":
            answers += await receive_until(comm, "error")
        answers.pop()
        assert answers.count({"type": "pong"}) == 5
        errors = [a for a in answers if a["type"] == "error"]
        assert [e["code"] for e in errors] == ["rate_limited"]  # once per window
        assert len(answers) == 6  # the other six were dropped unanswered
        await comm.send_json_to({"type": "ping"})
        assert await comm.receive_json_from() == {"type": "pong"}
    finally:
        await comm.disconnect()
