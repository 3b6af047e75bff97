"""Relaying an event costs the server no thread hop: the consumer hands each published
event to its client on the event loop (channels' dispatch would first hop to a shared
thread to close stale database connections, per message)."""

from __future__ import annotations

import pytest
from asgiref import sync
from channels.layers import get_channel_layer

from bulkops import events
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
