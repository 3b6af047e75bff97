"""Load: ``manage.py bulkops_bench --load`` (issue 12).

The production layout on one machine — 2 daphne servers and 2 ``db_worker`` processes on
a PostgreSQL database of the bench's own (created, migrated, dropped) and Redis (a key
prefix of its own, removed) — under N concurrent API clients and M WebSocket
subscribers, all on 127.0.0.1:

* users with a token and sessions are seeded; subscribers are spread over the users
  (at most ``SUBSCRIBERS_PER_USER`` each, under ``BULKOPS_MAX_WS_CONNECTIONS_PER_USER``)
  and all authenticated (first-message token) before any traffic;
* each client loops for ``duration`` seconds, as one user, without think time: validate,
  ``GET /api/sessions/``, status polls of its user's operations, and small actions
  (close/archive/delete/restore of 1–5 sessions, some with an ``Idempotency-Key``, some
  of those replayed, and now and then a cancel), with the product's default rate limits;
  every ``BURST_EVERY``-th client hammers its user's actions, so 429s are expected (each
  must carry ``Retry-After``);
* then every operation in the database must finish, and every subscriber must have
  received the final event (completed/failed/cancelled) of every operation of its user.

The HTTP client is a small asyncio HTTP/1.1 keep-alive client (one connection per API
client) so that the measuring process costs little next to the servers; WebSockets use
the ``websockets`` package. Everything is bounded in count and time, and the processes
are killed and the database dropped even on Ctrl-C or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import random
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from django.conf import settings

from bulkops.bench.report import percentile, rounded

ROOT = Path(settings.BASE_DIR)
MANAGE = [sys.executable, str(ROOT / "manage.py")]
#: Subscribers per user at most: half of BULKOPS_MAX_WS_CONNECTIONS_PER_USER's default (20).
SUBSCRIBERS_PER_USER = 10
FINAL_EVENTS = {
    "bulk_operation_completed": ("completed", "partial"),
    "bulk_operation_failed": ("failed",),
    "bulk_operation_cancelled": ("cancelled",),
}
ACTIVE_STATUSES = ("pending", "running", "paused")
ACTIONS = ("close", "archive", "delete", "restore")
#: What a client does next, with weights.
MIX = (("validate", 30), ("list", 25), ("status", 30), ("action", 13), ("cancel", 2))
#: Every BURST_EVERY-th client is a script hammering one user's actions: the rate limits
#: and the active-operations cap must answer it with 429 + Retry-After.
BURST_MIX = (("action", 90), ("status", 10))
BURST_EVERY = 25
STARTUP_TIMEOUT = 120.0
REQUEST_TIMEOUT = 30.0
DRAIN_TIMEOUT = 180.0  # operations to finish after the traffic stops
EVENT_GRACE = 30.0  # final events to arrive after the last operation finished


@dataclass
class LoadOptions:
    clients: int = 50
    subscribers: int = 200
    duration: float = 60.0
    #: 0: enough users for SUBSCRIBERS_PER_USER (at least 2, so isolation is checked too).
    users: int = 0
    sessions_per_user: int = 200
    servers: int = 2
    workers: int = 2

    def user_count(self) -> int:
        return self.users or max(2, math.ceil(self.subscribers / SUBSCRIBERS_PER_USER))


def postgres_admin_url() -> str:
    """The server of ``DATABASE_URL`` when it is PostgreSQL, else 127.0.0.1:5432."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        url = "postgres://postgres@127.0.0.1:5432/postgres"
    return urlparse(url)._replace(path="/postgres").geturl()


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


# --- the world: database, Redis prefix, processes ---------------------------------------------
SEED = """
import json, sys
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.authtoken.models import Token
from bulkops.models import Session
spec = json.loads(sys.stdin.read())
out = []
for u in range(spec["users"]):
    user = get_user_model().objects.create_user(f"load-{u}", password=None)
    token = Token.objects.create(user=user)
    Session.objects.bulk_create(
        (
            Session(
                id=f"u{u}-s{i:04d}", owner=user, title=f"Load {u}/{i}", content="x" * 200,
                deleted_at=timezone.now() if i % 5 == 0 else None,
            )
            for i in range(spec["sessions"])
        ),
        batch_size=500,
    )
    out.append({"user_id": user.pk, "token": token.key, "prefix": f"u{u}-s"})
print(json.dumps(out))
"""


class LoadWorld:
    """The database, the Redis prefix and the processes of one load run; ``close()``
    kills every process and drops the database whatever happened before."""

    def __init__(self, options: LoadOptions, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.name = f"bulkops_load_{secrets.token_hex(4)}"
        self.admin_url = postgres_admin_url()
        self.db_url = urlparse(self.admin_url)._replace(path=f"/{self.name}").geturl()
        self.prefix = self.name
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.bases: list[str] = []
        self.created = False

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(
            DJANGO_SETTINGS_MODULE="project.settings",
            DATABASE_URL=self.db_url,
            REDIS_URL=redis_url(),
            REDIS_PREFIX=self.prefix,
            # The production layout, on plain HTTP on purpose (docs/production.md).
            DEBUG="0",
            SECRET_KEY=secrets.token_urlsafe(40),
            ALLOWED_HOSTS="127.0.0.1,localhost",
            SECURE_SSL_REDIRECT="0",
            SESSION_COOKIE_SECURE="0",
            CSRF_COOKIE_SECURE="0",
            SECURE_HSTS_SECONDS="0",
            STATIC_ROOT=str(self.workdir / "static"),
            BULKOPS_EXPORT_DIR=str(self.workdir / "exports"),
            PYTHONUNBUFFERED="1",
        )
        return env

    def setup(self) -> list[dict[str, Any]]:
        """Create and migrate the database, seed the users; start servers and workers.
        Return the users (``user_id``, ``token``, ``prefix`` of their session ids)."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.created = True
        self.manage("migrate", "--no-input", "-v", "0")
        self.manage("collectstatic", "--no-input", "-v", "0")
        spec = {"users": self.options.user_count(), "sessions": self.options.sessions_per_user}
        out = self.manage("shell", "-c", SEED, input=json.dumps(spec))
        users = json.loads(out.strip().splitlines()[-1])
        for n in range(self.options.workers):
            self.start_worker(f"worker-{n + 1}")
        self.bases = [self.start_server(f"daphne-{n + 1}") for n in range(self.options.servers)]
        return users

    def manage(self, *args: str, input: str | None = None) -> str:
        done = subprocess.run(
            [*MANAGE, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT * 2,
            env=self.env(),
            cwd=ROOT,
        )
        if done.returncode:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")  # closed in close()
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=ROOT,
            # Its own process group: Ctrl-C reaches the bench only, which kills the group.
            start_new_session=True,
        )
        proc.log = log
        self.processes.append((name, proc))
        return proc

    def start_server(self, name: str) -> str:
        port = _free_port()
        argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        proc = self.start(name, [*argv, "project.asgi:application"])
        base = f"http://127.0.0.1:{port}"
        self._wait(lambda: _healthy(base), proc, name)
        return base

    def start_worker(self, name: str) -> None:
        argv = [*MANAGE, "db_worker", "--no-reload", "--interval", "0.1", "--worker-id", name]
        proc = self.start(name, argv)
        self._wait(lambda: "Starting worker" in self.log(name), proc, name)

    def _wait(self, ready, proc: subprocess.Popen, name: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start in {STARTUP_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def server_errors_logged(self) -> dict[str, int]:
        """Tracebacks in each process's log (a 500 is logged with one)."""
        return {name: self.log_full(name).count("Traceback") for name, _ in self.processes}

    def log_full(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each process has used so far (Linux /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        used = {}
        for name, proc in self.processes:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[name] = (int(fields[11]) + int(fields[12])) / tick
        own = resource.getrusage(resource.RUSAGE_SELF)
        used["bench client (this process)"] = own.ru_utime + own.ru_stime
        return used

    def query(self, sql: str, *params: Any) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return list(conn.execute(sql, params).fetchall())

    def close(self) -> None:
        """Kill every process (its whole group), drop the database, remove the Redis keys."""
        for _, proc in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            proc.log.close()
        if self.created:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        _drop_redis_keys(self.prefix)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _drop_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url(), socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


# --- a small HTTP/1.1 keep-alive client -------------------------------------------------------
class HttpConnection:
    """One keep-alive connection; ``request`` reopens it when the server closed it."""

    def __init__(self, base: str) -> None:
        parsed = urlparse(base)
        self.host, self.port = parsed.hostname, parsed.port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, *, headers: dict[str, str], body: Any = None
    ) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        try:
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
            await self.writer.drain()
            status, head = await self._head()
            content = await self._body(head)
        except BaseException:
            await self.close()
            raise
        if head.get("connection", "").lower() == "close":
            await self.close()
        return status, head, content

    async def _head(self) -> tuple[int, dict[str, str]]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        head = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                head[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), head

    async def _body(self, head: dict[str, str]) -> bytes:
        if "content-length" in head:
            return await self.reader.readexactly(int(head["content-length"]))
        if head.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")
            return b"".join(parts)
        return await self.reader.read()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


# --- what was seen ----------------------------------------------------------------------------
@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    transport_errors: Counter = field(default_factory=Counter)
    missing_retry_after: int = 0
    accepted: set[str] = field(default_factory=set)  # operation ids answered with 202
    replays: int = 0
    replays_mismatched: int = 0

    def record(self, endpoint: str, status: int, head: dict[str, str], ms: float) -> None:
        self.latencies[endpoint].append(ms)
        self.statuses[endpoint][status] += 1
        if status == 429 and not head.get("retry-after", "").isdigit():
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
        self.mix = mix
        self.conn = HttpConnection(base)
        self.stats = stats
        self.rng = rng
        self.auth = {"Authorization": f"Token {user.token}"}

    async def run(self, until: float, stopped: threading.Event) -> None:
        kinds, weights = zip(*self.mix, strict=True)
        try:
            while time.monotonic() < until and not stopped.is_set():
                kind = self.rng.choices(kinds, weights)[0]
                await getattr(self, f"do_{kind}")()
        finally:
            await self.conn.close()

    async def call(self, endpoint: str, method: str, path: str, body=None, headers=None):
        started = time.perf_counter()
        try:
            status, head, content = await asyncio.wait_for(
                self.conn.request(
                    method, path, headers={**self.auth, **(headers or {})}, body=body
                ),
                REQUEST_TIMEOUT,
            )
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
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


# --- the run ----------------------------------------------------------------------------------
class LoadBench:
    """``run()`` sets the world up, runs the traffic, waits for every operation and
    every final event, tears everything down and returns the report."""

    def __init__(self, options: LoadOptions, *, progress=None) -> None:
        self.options = options
        self.progress = progress or (lambda _msg: None)
        self.stats = Stats()
        self.subscribers: list[Subscriber] = []
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        #: Set by Ctrl-C / SIGTERM during the traffic: every loop ends, then everything
        #: is torn down (asyncio's own cancellation can be swallowed by ``wait_for``).
        self.stopped = threading.Event()

    def run(self) -> dict[str, Any]:
        load_before = _load_average()
        workdir = Path(tempfile.mkdtemp(prefix="bulkops-load-"))
        world = LoadWorld(self.options, workdir)
        previous = _sigterm_as_interrupt()
        try:
            self.progress("setting up: database, migrate, collectstatic, seed, processes")
            started = time.monotonic()
            users = [_user(u, self.options) for u in world.setup()]
            self.timings["setup_seconds"] = time.monotonic() - started
            self.progress(
                f"traffic: {self.options.clients} clients for {self.options.duration:g} s"
            )
            asyncio.run(self._traffic(world, users))
            _sigterm_as_interrupt()  # asyncio restored the default on leaving
            if self.stopped.is_set():
                raise KeyboardInterrupt
            return self._report(world, users, load_before)
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.progress("cleaning up")
            world.close()
            with contextlib.suppress(OSError):
                _rmtree(workdir)

    async def _traffic(self, world: LoadWorld, users: list[User]) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopped.set)
        bases = world.bases
        self.subscribers = [
            Subscriber(users[i % len(users)], bases[i % len(bases)])
            for i in range(self.options.subscribers)
        ]
        try:
            await self._connect_subscribers()
            if not self.stopped.is_set():
                await self._clients(world, users)
            if not self.stopped.is_set():
                self.progress("draining: waiting for every operation to finish")
                await asyncio.to_thread(self._drain, world)
                self.progress("waiting for the final events")
                await self._await_finals(world)
        finally:
            await asyncio.gather(*(s.close() for s in self.subscribers))

    async def _connect_subscribers(self) -> None:
        # Small batches: a burst of hundreds of handshakes is not what is measured.
        for start in range(0, len(self.subscribers), 20):
            if self.stopped.is_set():
                return
            await asyncio.gather(*(s.connect() for s in self.subscribers[start : start + 20]))

    async def _clients(self, world: LoadWorld, users: list[User]) -> None:
        bases = world.bases
        rng = random.Random(12)
        clients = [
            ApiClient(
                users[i % len(users)],
                bases[i % len(bases)],
                self.stats,
                random.Random(rng.random()),
                BURST_MIX if i % BURST_EVERY == 0 else MIX,
            )
            for i in range(self.options.clients)
        ]
        started = time.monotonic()
        cpu_before = world.cpu_seconds()
        until = started + self.options.duration
        await asyncio.gather(*(c.run(until, self.stopped) for c in clients))
        self.timings["traffic_seconds"] = time.monotonic() - started
        self.cpu = {
            name: round(seconds - cpu_before.get(name, 0.0), 1)
            for name, seconds in world.cpu_seconds().items()
        }

    def _drain(self, world: LoadWorld) -> None:
        started = time.monotonic()
        deadline = started + DRAIN_TIMEOUT
        sql = "SELECT count(*) FROM bulkops_bulkoperation WHERE status = ANY(%s)"
        while world.query(sql, list(ACTIVE_STATUSES))[0][0] and not self.stopped.is_set():
            if time.monotonic() > deadline:
                self.notes.append(f"Operations still active after {DRAIN_TIMEOUT:.0f} s.")
                break
            time.sleep(0.25)
        self.timings["drain_seconds"] = time.monotonic() - started

    async def _await_finals(self, world: LoadWorld) -> None:
        operations = await asyncio.to_thread(_operations, world)
        deadline = time.monotonic() + EVENT_GRACE
        while any(_missing(s, operations) for s in self.subscribers):
            if time.monotonic() > deadline or self.stopped.is_set():
                break
            await asyncio.sleep(0.1)

    # --- the report ------------------------------------------------------------------------------
    def _report(self, world: LoadWorld, users: list[User], load_before) -> dict[str, Any]:
        operations = _operations(world)
        traffic = self.timings.get("traffic_seconds") or self.options.duration
        total = sum(len(v) for v in self.stats.latencies.values())
        statuses = Counter()
        for counts in self.stats.statuses.values():
            statuses.update(counts)
        requests_part = {
            "total": total,
            "per_second": round(total / traffic, 1),
            "by_status": {str(k): v for k, v in sorted(statuses.items())},
            "server_errors": sum(v for k, v in statuses.items() if k >= 500),
            "rate_limited": statuses.get(429, 0),
            "rate_limited_without_retry_after": self.stats.missing_retry_after,
            "transport_errors": dict(self.stats.transport_errors),
            "idempotent_replays": self.stats.replays,
            "idempotent_replays_mismatched": self.stats.replays_mismatched,
        }
        report = {
            "scenario": "load",
            "command": "manage.py bulkops_bench " + " ".join(sys.argv[2:]),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": _machine(world, load_before),
            "options": self._options(users),
            "timings_seconds": {k: round(v, 1) for k, v in self.timings.items()},
            "requests": requests_part,
            "endpoints": self._endpoints(traffic),
            "operations": self._operations_part(operations),
            "websocket": self._websocket_part(operations),
            "cpu_seconds_during_traffic": self.cpu,
            "server_tracebacks": world.server_errors_logged(),
            "notes": self.notes,
        }
        report["checks"] = _checks(report)
        return report

    def _options(self, users: list[User]) -> dict[str, Any]:
        return {
            "clients": self.options.clients,
            "subscribers": self.options.subscribers,
            "duration_seconds": self.options.duration,
            "users": len(users),
            "sessions_per_user": self.options.sessions_per_user,
            "servers": self.options.servers,
            "workers": self.options.workers,
            "mix_weights": dict(MIX),
            "burst_clients": len(range(0, self.options.clients, BURST_EVERY)),
            "burst_mix_weights": dict(BURST_MIX),
            "layout": "daphne × servers, db_worker --interval 0.1 × workers, PostgreSQL + "
            "Redis, DEBUG=0 on plain HTTP; default rate limits and caps",
        }

    def _endpoints(self, seconds: float) -> list[dict[str, Any]]:
        rows = []
        for endpoint in sorted(self.stats.latencies):
            samples = self.stats.latencies[endpoint]
            rows.append(
                {
                    "endpoint": endpoint,
                    "requests": len(samples),
                    "per_second": round(len(samples) / seconds, 1),
                    "p50_ms": rounded(percentile(samples, 50)),
                    "p99_ms": rounded(percentile(samples, 99)),
                    "max_ms": rounded(max(samples)),
                    "statuses": {
                        str(k): v for k, v in sorted(self.stats.statuses[endpoint].items())
                    },
                }
            )
        return rows

    def _operations_part(self, operations: dict[str, tuple[int, str]]) -> dict[str, Any]:
        by_status = Counter(status for _, status in operations.values())
        return {
            "created": len(operations),
            "finished": sum(v for k, v in by_status.items() if k not in ACTIVE_STATUSES),
            "by_status": dict(sorted(by_status.items())),
            "accepted_by_api": len(self.stats.accepted),
            "accepted_not_in_database": len(self.stats.accepted - set(operations)),
            "in_database_not_accepted": len(set(operations) - self.stats.accepted),
        }

    def _websocket_part(self, operations: dict[str, tuple[int, str]]) -> dict[str, Any]:
        expected = sum(len(_expected(s, operations)) for s in self.subscribers)
        lost = sum(len(_missing(s, operations)) for s in self.subscribers)
        wrong = sum(
            1
            for s in self.subscribers
            for op, kind in s.finals.items()
            if op in operations and operations[op][1] not in FINAL_EVENTS[kind]
        )
        foreign = sum(
            1
            for s in self.subscribers
            for op in s.seen
            if operations.get(op, (None,))[0] != s.user.user_id
        )
        return {
            "subscribers": len(self.subscribers),
            "per_user": math.ceil(len(self.subscribers) / max(1, self.options.user_count())),
            "events_received": sum(sum(s.events.values()) for s in self.subscribers),
            "events_by_type": dict(sum((s.events for s in self.subscribers), Counter())),
            "final_events_expected": expected,
            "final_events_received": expected - lost,
            "events_lost": lost,
            "final_event_status_mismatches": wrong,
            "foreign_operations_seen": foreign,
            "closed_early": sum(1 for s in self.subscribers if s.closed is not None),
        }


def _user(data: dict[str, Any], options: LoadOptions) -> User:
    ids = [f"{data['prefix']}{i:04d}" for i in range(options.sessions_per_user)]
    return User(user_id=data["user_id"], token=data["token"], session_ids=ids)


def _operations(world: LoadWorld) -> dict[str, tuple[int, str]]:
    """Every operation in the database: id → (user id, status)."""
    rows = world.query("SELECT id, user_id, status FROM bulkops_bulkoperation")
    return {op: (user_id, status) for op, user_id, status in rows}


def _expected(sub: Subscriber, operations: dict[str, tuple[int, str]]) -> set[str]:
    return {
        op
        for op, (user_id, status) in operations.items()
        if user_id == sub.user.user_id and status not in ACTIVE_STATUSES
    }


def _missing(sub: Subscriber, operations: dict[str, tuple[int, str]]) -> set[str]:
    return _expected(sub, operations) - set(sub.finals)


def _checks(report: dict[str, Any]) -> dict[str, bool]:
    req, ops, ws = report["requests"], report["operations"], report["websocket"]
    return {
        "no_server_errors": req["server_errors"] == 0 and not req["transport_errors"],
        "retry_after_on_every_429": req["rate_limited_without_retry_after"] == 0,
        "no_events_lost": ws["events_lost"] == 0 and ws["final_event_status_mismatches"] == 0,
        "no_foreign_events": ws["foreign_operations_seen"] == 0,
        "every_operation_finished": ops["finished"] == ops["created"],
        "operations_match_api": ops["accepted_not_in_database"] == 0
        and ops["in_database_not_accepted"] == 0,
        "idempotent_replays_same_operation": req["idempotent_replays_mismatched"] == 0,
    }


def _load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _machine(world: LoadWorld, load_before: list[float]) -> dict[str, Any]:
    import channels
    import daphne
    import django
    import redis

    client = redis.Redis.from_url(redis_url(), socket_timeout=5)
    try:
        redis_version = client.info("server")["redis_version"]
    finally:
        client.close()
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "daphne": daphne.__version__,
        "channels": channels.__version__,
        "database": f"PostgreSQL {world.query('SHOW server_version')[0][0]}",
        "redis": f"Redis {redis_version}",
        "load_average_before": load_before,
        "load_average_after": _load_average(),
    }


def _sigterm_as_interrupt():
    """While the bench runs, SIGTERM unwinds like Ctrl-C (so the processes are killed)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# --- the terminal report ----------------------------------------------------------------------
def render_load(report: dict[str, Any]) -> str:
    opts, req, ops, ws = (
        report["options"],
        report["requests"],
        report["operations"],
        report["websocket"],
    )
    m = report["machine"]
    out = [
        f"Load: {opts['clients']} API clients + {ws['subscribers']} WebSocket subscribers "
        f"({opts['users']} users) for {opts['duration_seconds']:g} s against "
        f"{opts['servers']} daphne + {opts['workers']} db_worker",
        f"{m['cpu_count']} CPUs, {m['database']}, {m['redis']}, Python {m['python']}, "
        f"Django {m['django']}; load average before {m['load_average_before']}, after "
        f"{m['load_average_after']}",
        "",
        f"{'endpoint':<16}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}  statuses",
    ]
    for row in report["endpoints"]:
        out.append(
            f"{row['endpoint']:<16}{row['requests']:>10,}{row['per_second']:>9}"
            f"{row['p50_ms']:>9}{row['p99_ms']:>9}  {row['statuses']}"
        )
    out += [
        "",
        f"Requests: {req['total']:,} ({req['per_second']}/s); 5xx: {req['server_errors']}; "
        f"429: {req['rate_limited']} "
        f"(without Retry-After: {req['rate_limited_without_retry_after']}); "
        f"transport errors: {req['transport_errors'] or 0}",
        f"Operations: {ops['created']} created, {ops['finished']} finished {ops['by_status']}; "
        f"accepted by the API {ops['accepted_by_api']}",
        f"WebSocket: {ws['events_received']:,} events; final events {ws['final_events_received']}"
        f"/{ws['final_events_expected']}, lost {ws['events_lost']}; "
        f"closed early {ws['closed_early']}",
        "Checks: "
        + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in report["checks"].items()),
    ]
    cpu = report.get("cpu_seconds_during_traffic") or {}
    if cpu:
        out.append(
            "CPU seconds during the traffic: " + ", ".join(f"{k} {v}" for k, v in cpu.items())
        )
    out += [f"Note: {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"
