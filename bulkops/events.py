"""Operation events: built here, published here — the only module that talks to the
channel layer (DESIGN.md §6).

Publishing never fails an operation: the database row is the truth and events are a
live view of it, so a channel layer that is down is logged and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

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


def operation_group(operation_id: str) -> str:
    return f"bulk.op.{operation_id}"


def _send(groups: list[str], message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return

    async def send_all() -> None:
        for group in groups:
            await layer.group_send(group, message)

    loop = _server_loop
    try:
        if loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(send_all())
            else:
                asyncio.run_coroutine_threadsafe(send_all(), loop).result(timeout=5)
        else:
            async_to_sync(send_all)()
    except Exception:
        logger.warning(
            "could not publish %s event", message.get("event", {}).get("type"), exc_info=True
        )


def publish_operation(operation: BulkOperation, event_type: str) -> None:
    """Publish the operation's full representation, flat, as ``event_type``."""
    from bulkops.selectors import operation_representation

    event = {"type": event_type, **operation_representation(operation)}
    _send(
        [user_group(operation.user_id), operation_group(operation.pk)],
        {"type": "bulk.event", "event": event},
    )


def publish_sessions_updated(operation: BulkOperation, session_ids: list[str], status: str) -> None:
    event = {
        "type": "sessions_updated",
        "operation_id": operation.pk,
        "session_ids": list(session_ids),
        "status": status,
    }
    _send(
        [user_group(operation.user_id), operation_group(operation.pk)],
        {"type": "bulk.event", "event": event},
    )
