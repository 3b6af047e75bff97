"""Relaying events: no thread hop per event (channels' dispatch would first hop to a
shared thread to close stale database connections, per message), and the events an
inline run holds until its commit travel as one message, relayed frame by frame."""

from __future__ import annotations

import pytest
from asgiref import sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from bulkops import events
from bulkops.engine import Selection, operation_create
from bulkops.tests.realtime.test_consumers import token_connected

pytestmark = pytest.mark.django_db(transaction=True)


async def test_events_are_relayed_in_order_without_a_thread_hop(owner, monkeypatch):
    comm = await token_connected(owner)
    hops: list[str] = []
    original = sync.SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", counted)
    kinds = ["bulk_operation_started", "sessions_updated", "bulk_operation_completed"]
    layer = get_channel_layer()
    for n, kind in enumerate(kinds):
        event = {"type": kind, "operation_id": "op-" + "0" * 32, "n": n}
        await layer.group_send(events.user_group(owner.pk), {"type": "bulk.event", "event": event})

    received = [await comm.receive_json_from() for _ in kinds]

    assert [(e["type"], e["n"]) for e in received] == [(k, n) for n, k in enumerate(kinds)]
    assert hops == []
    await comm.disconnect()


async def test_an_inline_runs_events_are_one_message_relayed_as_three_frames(
    owner, make_session, settings, monkeypatch
):
    settings.BULKOPS_INLINE_MAX_SESSIONS = 20
    sid = (await database_sync_to_async(make_session)(owner)).pk
    comm = await token_connected(owner)
    layer = get_channel_layer()
    sent: list[str] = []
    original = layer.group_send

    async def counted(group, message):
        sent.append(message["type"])
        await original(group, message)

    monkeypatch.setattr(layer, "group_send", counted)
    selection = Selection(session_ids=[sid])
    started = await database_sync_to_async(operation_create)(
        user=owner, action="close", selection=selection
    )

    received = [await comm.receive_json_from() for _ in range(3)]
    assert [e["type"] for e in received] == [
        "bulk_operation_started",
        "sessions_updated",
        "bulk_operation_completed",
    ]
    assert {e["operation_id"] for e in received} == {started.operation.pk}
    assert (received[-1]["status"], received[-1]["succeeded"]) == ("completed", 1)
    assert sent == ["bulk.events"]
    assert await comm.receive_nothing()
    await comm.disconnect()
