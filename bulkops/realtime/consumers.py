"""The WebSocket consumer (DESIGN.md §6): authenticate, authorise, join groups, relay.

No business logic here: operations are read through ``bulkops.selectors`` and events are
built and published by ``bulkops.events``. Every client message is answered or refused
with ``{"type": "error", "code", "message"}``; only authentication problems close the
connection (4401 no or bad credentials, 4403 someone else's user path).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from bulkops import events
from bulkops.exceptions import OperationNotFound
from bulkops.representations import operation_representation
from bulkops.selectors import operation_get_for_user

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
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


class BulkOperationsConsumer(AsyncJsonWebsocketConsumer):
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

    async def connect(self) -> None:
        self.user = None
        self.subscriptions: set[str] = set()
        self.auth_task: asyncio.Task | None = None
        self.window_start = 0.0
        self.window_count = 0
        self.path_user_id: int | None = None
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
        if self.auth_task is not None:
            self.auth_task.cancel()
        if self.user is not None:
            await self.channel_layer.group_discard(
                events.user_group(self.user.pk), self.channel_name
            )

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(self.auth_timeout)
        if self.user is None:
            await self.send_error("not_authenticated", "No authentication in time; closing.")
            await self.close(code=CLOSE_UNAUTHENTICATED)

    async def _authenticated(self, user) -> bool:
        """Adopt ``user``; close with 4403 when the path names someone else."""
        if self.path_user_id is not None and self.path_user_id != user.pk:
            await self.close(code=CLOSE_FORBIDDEN)
            return False
        self.user = user
        if self.auth_task is not None:
            self.auth_task.cancel()
            self.auth_task = None
        # Joined before answering: once the client reads ``authenticated``, no event of
        # its operations can pass it by.
        await self.channel_layer.group_add(events.user_group(user.pk), self.channel_name)
        await self.send_json({"type": "authenticated", "user_id": user.pk})
        return True

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
        await self.send_json(message["event"])

    async def send_error(self, code: str, message: str, **extra: Any) -> None:
        await self.send_json({"type": "error", "code": code, "message": message, **extra})


async def unknown_path(scope: dict, receive, send) -> None:
    """Any other WebSocket path (routing's catch-all): accepted only to say so, with a
    ``not_found`` error and close 4404, where URLRouter would raise "No route found" and
    daphne answer HTTP 500 with a traceback."""
    if (await receive())["type"] != "websocket.connect":
        return
    error = {"type": "error", "code": "not_found", "message": "No WebSocket here; use /ws/bulk/."}
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps(error)})
    await send({"type": "websocket.close", "code": CLOSE_NOT_FOUND})
