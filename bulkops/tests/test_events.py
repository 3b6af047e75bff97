"""Operation events: what is published, how often, and that publishing never fails an
operation (DESIGN.md §6)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework.authtoken.models import Token

from bulkops import events
from bulkops.engine import Selection, executor, operation_create, operation_pause
from bulkops.tests.support.helpers import assert_counters_add_up, execute, free_port
from bulkops.worker import WorkerThread
from project.asgi import application


@pytest.fixture
def published(monkeypatch):
    """Every event the engine publishes, in order (the channel layer is bypassed)."""
    seen: list[dict] = []
    monkeypatch.setattr(events, "_send", lambda groups, message: seen.append(message["event"]))
    return seen


def kinds(seen: list[dict]) -> list[str]:
    return [e["type"] for e in seen]


@pytest.fixture
def twenty_sessions(owner, make_session, settings):
    settings.BULKOPS_CHUNK_SIZE = 2
    return [make_session(owner, id=f"s{i:02d}").pk for i in range(20)]


def test_progress_is_coalesced_but_started_and_final_are_never_dropped(
    owner, twenty_sessions, published, monkeypatch
):
    monkeypatch.setattr(executor.Publisher, "MIN_INTERVAL", 3600)
    op = execute(owner, "close", twenty_sessions)
    run = published
    assert kinds(run)[0] == "bulk_operation_started"
    assert kinds(run)[-1] == "bulk_operation_completed"
    # Ten chunks within one coalescing window: at most one progress event, but every
    # chunk's sessions_updated, and the final event.
    assert kinds(run).count("bulk_operation_progress") <= 1
    updates = [e for e in run if e["type"] == "sessions_updated"]
    assert len(updates) == 10
    assert sorted(sid for e in updates for sid in e["session_ids"]) == twenty_sessions
    assert run[-1]["status"] == op.status == "completed"
    assert run[-1]["version"] == op.version


def test_at_most_one_progress_event_per_committed_chunk(
    owner, twenty_sessions, published, monkeypatch
):
    monkeypatch.setattr(executor.Publisher, "MIN_INTERVAL", 0)
    op = execute(owner, "close", twenty_sessions)
    progress = [e for e in published if e["type"] == "bulk_operation_progress"]
    assert len(progress) == 10
    assert [e["processed"] for e in progress] == list(range(2, 21, 2))
    versions = [e["version"] for e in published if e["type"].startswith("bulk_operation")]
    assert versions == sorted(versions)
    assert_counters_add_up(op)


def test_a_one_chunk_operation_sends_its_final_event_without_a_progress_event_before_it(
    owner, make_session, published
):
    # The last chunk's progress would carry the very counters the final event carries.
    sid = make_session(owner).pk
    op = execute(owner, "close", [sid])
    assert kinds(published) == [
        "bulk_operation_started",
        "sessions_updated",
        "bulk_operation_completed",
    ]
    assert published[-1]["progress"] == 100 and published[-1]["processed"] == op.total == 1


def test_events_are_flat_with_the_full_representation(owner, make_session, published):
    make_session(owner, id="s1")
    execute(owner, "close", ["s1"])
    final = published[-1]
    for key in (
        "operation_id",
        "action",
        "status",
        "progress",
        "total",
        "processed",
        "succeeded",
        "skipped",
        "failed",
        "cancelled",
        "errors",
        "created_at",
        "started_at",
        "finished_at",
        "duration_seconds",
        "eta_seconds",
        "version",
    ):
        assert key in final
    assert (final["type"], final["progress"], final["eta_seconds"]) == (
        "bulk_operation_completed",
        100,
        0.0,
    )


def test_a_channel_layer_that_is_down_does_not_fail_the_operation(
    owner, make_session, settings, caplog
):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"], "prefix": "h_ws_down"},
        }
    }
    for i in range(3):
        make_session(owner, id=f"s{i}")
    with caplog.at_level(logging.WARNING, logger="bulkops.events"):
        op = execute(owner, "close", ["s0", "s1", "s2"])
    assert (op.status, op.succeeded) == ("completed", 3)
    assert "could not publish bulk_operation_completed event" in caplog.text


class HangingLayer:
    """A layer whose sends never return (a black-holed Redis)."""

    def __init__(self, **kwargs):
        pass

    async def group_send(self, group, message):
        await asyncio.sleep(3600)


def test_a_hanging_channel_layer_is_given_up_on_after_the_timeout(
    owner, make_session, settings, monkeypatch, caplog
):
    monkeypatch.setattr(events, "PUBLISH_TIMEOUT", 0.2)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": f"{__name__}.HangingLayer"}}
    make_session(owner, id="s1")
    with caplog.at_level(logging.WARNING, logger="bulkops.events"):
        op = execute(owner, "close", ["s1"])
    assert (op.status, op.succeeded) == ("completed", 1)
    assert "could not publish" in caplog.text


@pytest.mark.django_db(transaction=True)
async def test_events_from_the_in_process_worker_thread_reach_a_websocket_client(
    owner, make_session
):
    """``serve``: the worker runs on a thread of the server process and hands its
    events to the server's loop, where the in-memory layer's queues live."""
    for i in range(5):
        await database_sync_to_async(make_session)(owner, id=f"s{i}")
    token = await database_sync_to_async(lambda: Token.objects.create(user=owner).key)()
    comm = WebsocketCommunicator(
        application, "/ws/bulk/", headers=[(b"origin", b"http://testserver")]
    )
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "auth", "token": token})
    assert (await comm.receive_json_from())["type"] == "authenticated"
    # Created before the worker starts: the test database is in-memory SQLite, whose
    # shared cache refuses (rather than waits for) a second thread during a write.
    started = await database_sync_to_async(operation_create)(
        user=owner, action="close", selection=Selection(session_ids=[f"s{i}" for i in range(5)])
    )
    op = started.operation
    events.set_server_loop(asyncio.get_running_loop())
    worker = WorkerThread(interval=0.05)
    worker.start()
    try:
        seen = []
        while not seen or seen[-1]["type"] != "bulk_operation_completed":
            seen.append(await comm.receive_json_from(timeout=10))
        assert "bulk_operation_started" in kinds(seen)
        assert seen[-1]["operation_id"] == op.pk
        assert (seen[-1]["status"], seen[-1]["succeeded"]) == ("completed", 5)
    finally:
        await comm.disconnect()
        await asyncio.to_thread(worker.stop)
        events.set_server_loop(None)
    assert not worker.is_alive()


def test_each_event_is_sent_once_to_its_users_group_only(owner, twenty_sessions, monkeypatch):
    """Counted on the channel layer itself: one ``group_send`` per event, to the user's
    group (no per-operation group that nothing joins)."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    sent: list[tuple[str, str]] = []
    original = layer.group_send

    async def counting(group, message):
        sent.append((group, message["event"]["type"]))
        await original(group, message)

    monkeypatch.setattr(layer, "group_send", counting)
    monkeypatch.setattr(executor.Publisher, "MIN_INTERVAL", 0)
    execute(owner, "close", twenty_sessions)
    assert {group for group, _ in sent} == {events.user_group(owner.pk)}
    counts = {kind: [k for _, k in sent].count(kind) for _, kind in sent}
    assert counts == {
        "bulk_operation_started": 1,
        "sessions_updated": 10,
        "bulk_operation_progress": 10,
        "bulk_operation_completed": 1,
    }


def test_a_pause_at_a_chunk_boundary_sends_paused_not_a_final_event(
    owner, twenty_sessions, published, monkeypatch
):
    original = executor.record  # each chunk's last step, whichever way it applied

    def pause_in_first_chunk(operation, part, now):
        original(operation, part, now)
        operation_pause(operation=operation)

    monkeypatch.setattr(executor, "record", pause_in_first_chunk)
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=twenty_sessions)
    ).operation
    executor.operation_execute(operation_id=op.pk)
    op.refresh_from_db()
    last = published[-1]
    assert (last["type"], last["status"], last["processed"]) == (
        "bulk_operation_paused",
        "paused",
        2,
    )
    assert last["version"] == op.version and last["eta_seconds"] is None
    assert not {"bulk_operation_completed", "bulk_operation_failed"} & set(kinds(published))


def test_consecutive_events_to_the_same_groups_are_joined_in_order_and_nothing_else():
    group, other = ["bulk.user.1"], ["bulk.user.2"]

    def event(n: int) -> dict:
        return {"type": "bulk.event", "event": {"type": "sessions_updated", "n": n}}

    revoked = {"type": "bulk.access_revoked", "token": None}
    batch = [(group, event(1)), (group, event(2)), (group, revoked), (group, event(3)),
             (other, event(4)), (other, event(5))]  # fmt: skip
    assert events._joined(batch) == [
        (group, {"type": "bulk.events", "events": [event(1)["event"], event(2)["event"]]}),
        (group, revoked),
        (group, event(3)),
        (other, {"type": "bulk.events", "events": [event(4)["event"], event(5)["event"]]}),
    ]
