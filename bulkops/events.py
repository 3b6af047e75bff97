"""Operation events: built here, published here — the only module that talks to the
channel layer. Also the one message that is not an operation's: "this
user's access is revoked" (``publish_access_revoked``), which closes their WebSockets.

Publishing never fails an operation: the database row is the truth and events are a
live view of it, so a channel layer that is down is logged and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

if TYPE_CHECKING:
    from bulkops.models import BulkOperation

logger = logging.getLogger("bulkops.events")

#: Set by ``manage.py serve``: the server's event loop. The in-memory channel layer's
#: queues belong to that loop, so a worker thread in the same process must hand its
#: publishes to it rather than run them on a loop of its own.
_server_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def set_server_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    global _server_loop
    with _lock:
        _server_loop = loop


def user_group(user_id: int) -> str:
    return f"bulk.user.{user_id}"


#: Longest a publish may hold up the worker (a hung channel layer must not stall it).
PUBLISH_TIMEOUT = 2.0

_own_loop: asyncio.AbstractEventLoop | None = None


def _publisher_loop() -> asyncio.AbstractEventLoop:
    """A long-lived loop on a daemon thread, for processes without a server loop (a
    ``db_worker``): the Redis layer keeps one connection per loop, so every event reuses
    it instead of connecting afresh on a throw-away loop."""
    global _own_loop
    with _lock:
        if _own_loop is None or _own_loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="bulkops-events", daemon=True).start()
            _own_loop = loop
        return _own_loop


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


#: Messages, each with the groups it goes to, in the order they are sent.
Batch = list[tuple[list[str], dict[str, Any]]]
#: Inside ``after_commit``: the events held until the transaction commits.
_held: ContextVar[Batch | None] = ContextVar("bulkops_held_events", default=None)


@contextmanager
def after_commit() -> Iterator[None]:
    """Hold every event published in the block and send them, in order, once the
    current transaction commits — none when it rolls back or the block raises. For an
    operation run inside the transaction that creates it (``engine.inline``): a client
    must never hear of a state the database does not hold yet."""
    held: Batch = []
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)
    transaction.on_commit(lambda: _deliver(held))


def _send(groups: list[str], message: dict[str, Any]) -> None:
    """Send ``message`` to ``groups`` (or hold it: ``after_commit``)."""
    held = _held.get()
    if held is not None:
        held.append((groups, message))
    else:
        _deliver([(groups, message)])


def _joined(batch: Batch) -> Batch:
    """``batch`` with each run of consecutive events for the same groups joined into
    one ``bulk.events`` message (the consumer relays them one by one, in order): one
    publish and one delivery to each server instead of one per event. An inline run's
    started, sessions and final events are one message."""
    joined: Batch = []
    for groups, message in batch:
        last = joined[-1][1] if joined and joined[-1][0] == groups else {}
        if message["type"] != "bulk.event" or last.get("type") not in ("bulk.event", "bulk.events"):
            joined.append((groups, message))
            continue
        earlier = last["events"] if last["type"] == "bulk.events" else [last["event"]]
        joined[-1] = (groups, {"type": "bulk.events", "events": [*earlier, message["event"]]})
    return joined


def _deliver(batch: Batch) -> None:
    """Send each (groups, message) of ``batch`` in order (events joined: ``_joined``),
    in one hop to the event loop; log and return on any failure or timeout."""
    layer = get_channel_layer()
    if layer is None or not batch:
        return
    batch = _joined(batch)

    async def send_all() -> None:
        async def each() -> None:
            for groups, message in batch:
                for group in groups:
                    await layer.group_send(group, message)

        await asyncio.wait_for(each(), PUBLISH_TIMEOUT)

    loop = _server_loop
    try:
        if loop is None or not loop.is_running():
            # No (or no longer a) server loop here. In-memory: only a loop of this
            # process can deliver, and async_to_sync finds it when the caller runs under
            # sync_to_async (tests, runserver). Any other layer crosses processes:
            # publish from the long-lived loop.
            loop = None if isinstance(layer, InMemoryChannelLayer) else _publisher_loop()
        if loop is None:
            async_to_sync(send_all)()
        elif _running_loop() is loop:
            # Called on the loop's own thread: waiting would deadlock it.
            loop.create_task(send_all())
        else:
            asyncio.run_coroutine_threadsafe(send_all(), loop).result(PUBLISH_TIMEOUT + 1)
    except Exception:
        kinds = [e.get("type") for _, m in batch for e in m.get("events", [m.get("event", {})])]
        logger.warning("could not publish %s event", ", ".join(map(str, kinds)), exc_info=True)


def publish_operation(operation: BulkOperation, event_type: str) -> None:
    """Publish the operation's full representation, flat, as ``event_type``."""
    from bulkops.representations import operation_representation

    event = {"type": event_type, **operation_representation(operation)}
    _send([user_group(operation.user_id)], {"type": "bulk.event", "event": event})


def publish_sessions_updated(operation: BulkOperation, session_ids: list[str], status: str) -> None:
    event = {
        "type": "sessions_updated",
        "operation_id": operation.pk,
        "session_ids": list(session_ids),
        "status": status,
    }
    _send([user_group(operation.user_id)], {"type": "bulk.event", "event": event})


def token_digest(key: str) -> str:
    """What names a token on the channel layer (never the key itself)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def publish_access_revoked(*, user_id: int, token_key: str | None = None) -> None:
    """Tell the user's open WebSocket connections that their access is gone: all of
    them, or only those authenticated with ``token_key``. Each closes itself."""
    digest = None if token_key is None else token_digest(token_key)
    _send([user_group(user_id)], {"type": "bulk.access_revoked", "token": digest})
