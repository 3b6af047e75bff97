"""The WebSocket consumer: authenticate, authorise, join groups, relay.

No business logic here: operations are read through ``bulkops.selectors`` and events are
built and published by ``bulkops.events``. Every client message is answered or refused
with ``{"type": "error", "code", "message"}`` and the connection stays usable. The server
closes a connection only for these, each after an error message when one is due:

* 4401 no credentials in time, or bad ones (``not_authenticated``,
  ``authentication_failed``), or access lost while connected (``access_revoked``: the
  user deactivated or deleted, or the token it authenticated with deleted — announced
  through the channel layer by ``bulkops.revocation``, and re-checked every
  ``BULKOPS_WS_RECHECK_SECONDS``); 4403 someone else's user path;
* 4404 an unknown path (``not_found``, ``unknown_path`` below);
* 4429 the user already has ``BULKOPS_MAX_WS_CONNECTIONS_PER_USER`` connections open
  (``too_many_connections``; counted across servers, bulkops.realtime.connections);
* 1013 "try again later": the channel layer or the connection count (Redis) cannot be
  reached (``unavailable``).

A foreign Origin never gets this far (bulkops.realtime.origin: HTTP 403).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from bulkops import events
from bulkops.conf import bulkops_settings
from bulkops.exceptions import OperationNotFound
from bulkops.realtime.access import AccessWatch
from bulkops.realtime.connections import Slot, registry
from bulkops.representations import operation_representation
from bulkops.selectors import operation_get_for_user

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY_CONNECTIONS = 4429
CLOSE_TRY_AGAIN_LATER = 1013
UNAVAILABLE = {
    "type": "error",
    "code": "unavailable",
    "message": "Live events are unavailable right now; reconnect later.",
}
logger = logging.getLogger("bulkops.realtime")
USER_REF_RE = re.compile(r"(?:user-)?([0-9]{1,18})")
#: The shapes of what the database is asked about (models.new_operation_id, DRF's token
#: keys): anything else is refused before a query, so no input (a NUL, say) reaches it.
OPERATION_ID_RE = re.compile(r"op-[0-9a-f]{32}")
TOKEN_RE = re.compile(r"[0-9a-f]{40}")


async def _user_for_token(token: str):
    """The active user owning this DRF token, or None (also for a malformed token)."""
    if TOKEN_RE.fullmatch(token) is None:
        return None
    return await _token_owner(token)


@database_sync_to_async
def _token_owner(token: str):
    from rest_framework.authtoken.models import Token

    found = Token.objects.select_related("user").filter(key=token).first()
    if found is None or not found.user.is_active:
        return None
    return found.user


async def _snapshot(user, operation_id: str) -> dict[str, Any] | None:
    """The operation's representation, authorised like the REST API; None when the id is
    malformed, unknown or someone else's (the client cannot tell these apart)."""
    if OPERATION_ID_RE.fullmatch(operation_id) is None:
        return None
    return await _read_snapshot(user, operation_id)


@database_sync_to_async
def _read_snapshot(user, operation_id: str) -> dict[str, Any] | None:
    try:
        return operation_representation(
            operation_get_for_user(user=user, operation_id=operation_id)
        )
    except OperationNotFound:
        return None


class BulkOperationsConsumer(AccessWatch, AsyncJsonWebsocketConsumer):
    """``/ws/bulk/`` and ``/ws/bulk/<user_id>/``: every event of the user's operations.

    Limits are class attributes so a deployment (or a test) can tune them by subclassing.
    """

    #: Seconds an unauthenticated connection has to send ``{"type": "auth", …}``.
    auth_timeout = 5.0
    #: Operations one connection may have subscribed at once.
    max_subscriptions = 100
    #: Client messages accepted per second; the rest are refused with ``rate_limited``.
    max_messages_per_second = 20
    #: Largest client frame accepted, in characters (clients only send small commands).
    max_frame_size = 4096
    #: The rate limit's clock.
    clock = staticmethod(time.monotonic)
    #: Seconds the channel layer may take to join a connection to its user's group.
    layer_timeout = 5.0
    #: Where connections are counted per user (bulkops.realtime.connections).
    connection_registry = staticmethod(registry)

    async def __call__(self, scope, receive, send) -> None:
        """Channels' consumer, and two guarantees: a channel layer that cannot even give
        this connection its channel (Redis unreachable) is an ``unavailable`` error and
        close 1013, not a 1011 with a traceback; the connection's slot is freed however
        the consumer ends."""
        self.channel_name = None
        self.slot: Slot | None = None
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            if self.channel_name is not None:  # not the layer's new_channel(): a bug
                raise
            logger.warning("WebSocket closed 1013: the channel layer is unavailable: %r", exc)
            await accept_and_close(receive, send, UNAVAILABLE, CLOSE_TRY_AGAIN_LATER)
        finally:
            if self.slot is not None:
                await self.slot.free()

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch, without the thread hop it makes before every message to
        close stale database connections (``aclose_old_connections``): no handler here
        reads the database but through ``database_sync_to_async``, which closes them on
        its own thread, and that hop was most of the server's cost of relaying an event
        (every event of every connection queued for one shared thread)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.user = None
        self.token_key = None
        self.subscriptions: set[str] = set()
        self.auth_task: asyncio.Task | None = None
        self.window_start = 0.0
        self.window_count = 0
        self.path_user_id: int | None = None
        self.group: str | None = None
        ref = self.scope.get("url_route", {}).get("kwargs", {}).get("user_ref")
        # Accept first, so that refusals carry a close code the client can read.
        await self.accept()
        if ref is not None:
            match = USER_REF_RE.fullmatch(ref)
            if match is None:
                await self.close(code=CLOSE_FORBIDDEN)
                return
            self.path_user_id = int(match.group(1))
        user = self.scope.get("user")
        if user is not None and user.is_authenticated and user.is_active:
            await self._authenticated(user)
        else:
            self.auth_task = asyncio.ensure_future(self._auth_deadline())

    async def disconnect(self, code: int) -> None:
        self.stop_watching_access()
        if self.auth_task is not None:
            self.auth_task.cancel()
        if self.group is not None:
            try:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            except Exception as exc:  # the layer's errors (Redis away): nothing to undo
                logger.warning("WebSocket group not left: %s", exc)

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(self.auth_timeout)
        if self.user is None:
            await self.send_error("not_authenticated", "No authentication in time; closing.")
            await self.close(code=CLOSE_UNAUTHENTICATED)

    async def _authenticated(self, user) -> bool:
        """Adopt ``user`` once the path names them (else 4403), one of their connection
        slots is free (else 4429) and the channel layer has joined this connection to
        their group (else 1013); then answer ``authenticated``."""
        if self.auth_task is not None:
            self.auth_task.cancel()
            self.auth_task = None
        if self.path_user_id is not None and self.path_user_id != user.pk:
            await self.close(code=CLOSE_FORBIDDEN)
            return False
        if not await self._take_slot(user) or not await self._join(user):
            return False
        self.user = user
        self.watch_access()
        await self.send_json({"type": "authenticated", "user_id": user.pk})
        return True

    async def _take_slot(self, user) -> bool:
        limit = bulkops_settings.MAX_WS_CONNECTIONS_PER_USER
        self.slot = Slot(self.connection_registry(), user.pk)
        try:
            taken = await self.slot.take(limit)
        except Exception as exc:  # the store's errors (Redis away)
            return await self._unavailable("the connection count", exc)
        if not taken:
            await self.send_error(
                "too_many_connections",
                f"At most {limit} WebSocket connections per user are open at once; "
                "close one, then reconnect.",
            )
            await self.close(code=CLOSE_TOO_MANY_CONNECTIONS)
        return taken

    async def _join(self, user) -> bool:
        # Joined before answering: once the client reads ``authenticated``, no event of
        # its operations can pass it by.
        group = events.user_group(user.pk)
        try:
            await asyncio.wait_for(
                self.channel_layer.group_add(group, self.channel_name), self.layer_timeout
            )
        except Exception as exc:  # the layer's errors (Redis away), or its timeout
            return await self._unavailable("the channel layer", exc)
        self.group = group
        return True

    async def _unavailable(self, what: str, exc: Exception) -> bool:
        logger.warning("WebSocket closed 1013: %s is unavailable: %r", what, exc)
        await self.send_json(UNAVAILABLE)
        await self.close(code=CLOSE_TRY_AGAIN_LATER)
        return False

    # --- client → server ---------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if not await self._within_rate():
            return
        if text_data is None:
            await self.send_error("invalid_message", "Send JSON text frames, not binary.")
            return
        if len(text_data) > self.max_frame_size:
            await self.send_error(
                "too_large", f"Messages are at most {self.max_frame_size} characters."
            )
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            # RecursionError: valid JSON nested deeper than the parser goes ("[[[[…").
            await self.send_error("invalid_json", "The message is not valid JSON.")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_error("invalid_message", 'Send an object with a string "type".')
            return
        kind = content["type"]
        handler = {
            "auth": self.on_auth,
            "ping": self.on_ping,
            "subscribe": self.on_subscribe,
            "unsubscribe": self.on_unsubscribe,
        }.get(kind)
        if handler is None:
            await self.send_error(
                "unknown_type",
                f"Unknown message type {kind[:40]!r}; use auth, subscribe, unsubscribe, ping.",
            )
            return
        if kind not in ("auth", "ping") and self.user is None:
            await self.send_error("not_authenticated", 'Authenticate first: {"type": "auth"}.')
            return
        await handler(content)

    async def on_auth(self, content: dict) -> None:
        if self.user is not None:
            await self.send_error("already_authenticated", "This connection is authenticated.")
            return
        token = content.get("token")
        if not isinstance(token, str) or not token:
            await self.send_error("missing_field", 'auth needs a string "token".')
            return
        user = await _user_for_token(token)
        if user is None:
            await self.send_error("authentication_failed", "Invalid token.")
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.token_key = token
        await self._authenticated(user)

    async def on_ping(self, content: dict) -> None:
        await self.send_json({"type": "pong"})

    async def on_subscribe(self, content: dict) -> None:
        operation_id = await self._operation_id(content)
        if operation_id is None:
            return
        if (
            operation_id not in self.subscriptions
            and len(self.subscriptions) >= self.max_subscriptions
        ):
            await self.send_error(
                "too_many_subscriptions",
                f"At most {self.max_subscriptions} subscriptions per connection; "
                "unsubscribe from finished operations.",
            )
            return
        snapshot = await _snapshot(self.user, operation_id)
        if snapshot is None:
            await self.send_error("not_found", "No such operation.", operation_id=operation_id)
            return
        # Live events of the user's own operations already arrive through the user's
        # group, joined at authentication, so the snapshot (read after joining) is never
        # behind them; the subscription set only bounds and records what the client asked.
        self.subscriptions.add(operation_id)
        await self.send_json({"type": "subscribed", "operation": snapshot})

    async def on_unsubscribe(self, content: dict) -> None:
        operation_id = await self._operation_id(content)
        if operation_id is None:
            return
        if operation_id not in self.subscriptions:
            await self.send_error("not_found", "Not subscribed.", operation_id=operation_id)
            return
        self.subscriptions.discard(operation_id)
        await self.send_json({"type": "unsubscribed", "operation_id": operation_id})

    async def _operation_id(self, content: dict) -> str | None:
        operation_id = content.get("operation_id")
        if not isinstance(operation_id, str) or not operation_id:
            await self.send_error(
                "missing_field", f'{content["type"]} needs a string "operation_id".'
            )
            return None
        return operation_id[:64]

    async def _within_rate(self) -> bool:
        """Fixed one-second window; a refused message is answered once per window."""
        now = self.clock()
        if now - self.window_start >= 1.0:
            self.window_start, self.window_count = now, 0
        self.window_count += 1
        if self.window_count <= self.max_messages_per_second:
            return True
        if self.window_count == self.max_messages_per_second + 1:
            await self.send_error(
                "rate_limited",
                f"At most {self.max_messages_per_second} messages a second; "
                "messages over the limit are dropped.",
            )
        return False

    # --- server → client ---------------------------------------------------------------
    async def bulk_event(self, message: dict) -> None:
        """Relay one published event, flat, as it was built (bulkops.events)."""
        if not self.revoked:
            await self.send_json(message["event"])

    async def bulk_events(self, message: dict) -> None:
        """Relay several published events (one message: ``events._joined``), in order."""
        for event in message["events"]:
            if self.revoked:
                return
            await self.send_json(event)

    async def send_error(self, code: str, message: str, **extra: Any) -> None:
        await self.send_json({"type": "error", "code": code, "message": message, **extra})


async def accept_and_close(receive, send, error: dict, code: int) -> None:
    """Complete the handshake only to send ``error`` and close with ``code``."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps(error)})
    await send({"type": "websocket.close", "code": code})


async def unknown_path(scope: dict, receive, send) -> None:
    """Any other WebSocket path (routing's catch-all): accepted only to say so, with a
    ``not_found`` error and close 4404, where URLRouter would raise "No route found" and
    daphne answer HTTP 500 with a traceback."""
    error = {"type": "error", "code": "not_found", "message": "No WebSocket here; use /ws/bulk/."}
    await accept_and_close(receive, send, error, CLOSE_NOT_FOUND)
