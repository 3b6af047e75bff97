"""The load run's clients: API clients (one user each, one keep-alive connection through
``aiohttp``, a closed loop of weighted requests) and WebSocket subscribers (the
``websockets`` package), and what they saw (:class:`Stats`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

FINAL_EVENTS = {
    "bulk_operation_completed": ("completed", "partial"),
    "bulk_operation_failed": ("failed",),
    "bulk_operation_cancelled": ("cancelled",),
}
ACTIONS = ("close", "archive", "delete", "restore")
#: What a client does next, with weights.
MIX = (("validate", 30), ("list", 25), ("status", 30), ("action", 13), ("cancel", 2))
#: Every BURST_EVERY-th client is a script hammering one user's actions: the rate limits
#: and the active-operations cap must answer it with 429 + Retry-After.
BURST_MIX = (("action", 90), ("status", 10))
BURST_EVERY = 25
REQUEST_TIMEOUT = 30.0


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    transport_errors: Counter = field(default_factory=Counter)
    missing_retry_after: int = 0
    accepted: set[str] = field(default_factory=set)  # operation ids answered with 202
    replays: int = 0
    replays_mismatched: int = 0

    def record(self, endpoint: str, status: int, headers, ms: float) -> None:
        self.latencies[endpoint].append(ms)
        self.statuses[endpoint][status] += 1
        if status == 429 and not headers.get("Retry-After", "").isdigit():
            self.missing_retry_after += 1


@dataclass
class User:
    user_id: int
    token: str
    session_ids: list[str]
    operations: list[str] = field(default_factory=list)
    keyed: list[tuple[str, str, dict, str]] = field(default_factory=list)  # key, action, body, op


class ApiClient:
    """One API client: one user, one keep-alive connection, a closed loop until ``until``."""

    def __init__(self, user: User, base: str, stats: Stats, rng: random.Random, mix=MIX) -> None:
        self.user = user
        self.base = base
        self.mix = mix
        self.stats = stats
        self.rng = rng
        self.auth = {"Authorization": f"Token {user.token}"}

    async def run(self, until: float, stopped: threading.Event) -> None:
        import aiohttp

        kinds, weights = zip(*self.mix, strict=True)
        # One connection per client, kept alive, as a browser tab or a script holds one.
        connector = aiohttp.TCPConnector(limit=1, force_close=False)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(
            self.base, connector=connector, timeout=timeout, headers=self.auth
        ) as self.http:
            while time.monotonic() < until and not stopped.is_set():
                kind = self.rng.choices(kinds, weights)[0]
                await getattr(self, f"do_{kind}")()

    async def call(self, endpoint: str, method: str, path: str, body=None, headers=None):
        """One request, timed from send to the whole body read; (status, JSON) or
        (None, {}) after a transport error (counted)."""
        import aiohttp

        started = time.perf_counter()
        try:
            async with self.http.request(method, path, json=body, headers=headers) as response:
                content = await response.read()
                status, head = response.status, response.headers
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            self.stats.transport_errors[f"{endpoint}: {type(exc).__name__}"] += 1
            return None, {}
        self.stats.record(endpoint, status, head, (time.perf_counter() - started) * 1000)
        try:
            return status, json.loads(content or b"null")
        except ValueError:
            return status, {}

    def sample(self, low: int, high: int) -> list[str]:
        return self.rng.sample(self.user.session_ids, self.rng.randint(low, high))

    async def do_validate(self) -> None:
        body = {"action": self.rng.choice(ACTIONS), "session_ids": self.sample(3, 20)}
        await self.call("POST validate", "POST", "/api/bulk/sessions/validate", body)

    async def do_list(self) -> None:
        # Pages that exist (a page past the end is DRF's 404).
        query = f"?page={self.rng.randint(1, 3)}&page_size=20&ordering=-updated_at"
        if self.rng.random() < 0.3:
            query = "?page_size=20&status=" + self.rng.choice(("active", "closed", "archived"))
        await self.call("GET sessions", "GET", f"/api/sessions/{query}")

    async def do_status(self) -> None:
        if not self.user.operations:
            return await self.do_list()
        op = self.rng.choice(self.user.operations[-20:])
        await self.call("GET status", "GET", f"/api/bulk/operations/{op}/status")

    async def do_cancel(self) -> None:
        if not self.user.operations:
            return await self.do_validate()
        op = self.user.operations[-1]
        await self.call("POST cancel", "POST", f"/api/bulk/operations/{op}/cancel")

    async def do_action(self) -> None:
        if self.user.keyed and self.rng.random() < 0.1:
            return await self.replay()
        action = self.rng.choice(ACTIONS)
        body = {"session_ids": self.sample(1, 5)}
        headers = {}
        if self.rng.random() < 0.3:
            headers["Idempotency-Key"] = f"load-{secrets.token_hex(8)}"
        status, data = await self.call(
            f"POST {action}", "POST", f"/api/bulk/sessions/{action}", body, headers
        )
        if status == 202:
            self.stats.accepted.add(data["operation_id"])
            self.user.operations.append(data["operation_id"])
            if headers:
                key = headers["Idempotency-Key"]
                self.user.keyed.append((key, action, body, data["operation_id"]))

    async def replay(self) -> None:
        """The same key and body again: the same operation (202), nothing new started."""
        key, action, body, op = self.rng.choice(self.user.keyed)
        status, data = await self.call(
            f"POST {action}", "POST", f"/api/bulk/sessions/{action}", body, {"Idempotency-Key": key}
        )
        if status == 202:
            self.stats.replays += 1
            self.stats.replays_mismatched += data["operation_id"] != op


class Subscriber:
    """A WebSocket client of one user, authenticated by its first message."""

    def __init__(self, user: User, base: str) -> None:
        self.user = user
        self.url = base.replace("http", "ws", 1) + "/ws/bulk/"
        self.origin = base
        self.finals: dict[str, str] = {}
        self.seen: set[str] = set()  # every operation id any event named
        self.events: Counter = Counter()  # by type
        self.closed: str | None = None
        self.ws = self.reader = None

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        # No client pings: under load a late pong would close the connection here, and
        # daphne pings the client anyway.
        self.ws = await connect(self.url, origin=self.origin, open_timeout=60, ping_interval=None)
        await self.ws.send(json.dumps({"type": "auth", "token": self.user.token}))
        reply = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
        if reply.get("type") != "authenticated":
            raise RuntimeError(f"subscriber not authenticated: {reply}")
        self.reader = asyncio.ensure_future(self.read())

    async def read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in self.ws:
                self.on_message(json.loads(raw))
        except ConnectionClosed as exc:
            self.closed = f"{exc.rcvd.code if exc.rcvd else 'no close frame'}"
        else:
            self.closed = f"{self.ws.close_code}"

    def on_message(self, event: dict[str, Any]) -> None:
        self.events[event.get("type")] += 1
        if event.get("operation_id"):
            self.seen.add(event["operation_id"])
        if event.get("type") in FINAL_EVENTS:
            self.finals[event["operation_id"]] = event["type"]

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
