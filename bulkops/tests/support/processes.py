"""Support for the real-process tests (integration/, management/test_serve.py, realtime/):
the shared process orchestration (``benchmarks.processes``: a database of their own,
server and worker subprocesses that are always killed) with the tests' additions — the
operation read and the pause lock on that database, the tests' worker settings, the
``worlds`` fixture body, seeding, an HTTP call and a WebSocket watcher.

Nothing here is a test; the module is named so it sits with the tests it serves.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import processes as shared
from benchmarks.processes import (  # noqa: F401  (re-exported for the tests)
    DAPHNE,
    MANAGE,
    ROOT,
    WAIT,
    postgres_admin_url,
    postgres_available,
    wait_until,
)
from bulkops.tests.support.helpers import redis_available, require


def using_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith("postgres")


def using_redis() -> bool:
    return bool(os.environ.get("REDIS_URL"))


# --- the subprocesses' database ------------------------------------------------------------
class ProcessDB(shared.ProcessDB):
    """The shared database for subprocesses, with what the tests read and hold on it."""

    def operation(self, operation_id: str) -> dict[str, Any]:
        cols = "status, total, processed, succeeded, skipped, failed, cancelled, attempts, error"
        row = self.query(f"SELECT {cols} FROM bulkops_bulkoperation WHERE id = %s", operation_id)
        return dict(zip([c.strip() for c in cols.split(",")], row[0], strict=True))

    def pause_after(self, operation_id: str, processed: int, timeout: float = WAIT):
        """Once the operation has ``processed`` items, hold what a worker's next chunk
        needs (the operation's row lock on PostgreSQL, the write lock on SQLite) until
        ``.close()`` on the returned connection. One connection polls and locks, so the
        worker gets little further than ``processed`` before it stops."""
        conn = self.connect()
        sql = "SELECT processed FROM bulkops_bulkoperation WHERE id = %s"
        if not self.postgres:
            sql = sql.replace("%s", "?")
        try:
            deadline = time.monotonic() + timeout
            while conn.execute(sql, (operation_id,)).fetchone()[0] < processed:
                assert time.monotonic() < deadline, f"{processed} items not processed in time"
                time.sleep(0.001)
            if self.postgres:
                conn.execute("BEGIN")
                conn.execute(
                    "SELECT id FROM bulkops_bulkoperation WHERE id = %s FOR UPDATE",
                    (operation_id,),
                )
            else:
                take_write_lock_promptly(conn, deadline)
        except BaseException:
            conn.close()
            raise
        return conn


def take_write_lock_promptly(conn, deadline: float) -> None:
    """``BEGIN IMMEDIATE`` on SQLite, tried again at once while a worker holds the lock.
    SQLite's own busy handler sleeps up to 100 ms between tries, while a worker takes
    the lock again within milliseconds of its commit, so a waiting connection can
    starve until the whole operation has run; a busy timeout of 0 and a short spin
    take the lock in the gap between two of the worker's chunks."""
    import sqlite3

    conn.execute("PRAGMA busy_timeout = 0")
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.0002)


# --- subprocesses ---------------------------------------------------------------------------
class Processes(shared.Processes):
    """The shared processes; the tests' workers poll every 0.05 s and reap every second."""

    def worker(self, name: str, env: dict | None = None):  # type: ignore[override]
        """Start a ``db_worker``; return once it polls its queue."""
        return super().worker(name, "--reap-interval", "1", interval=0.05, env=env)


SETUP = """
import json, sys
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from bulkops.models import Session
from bulkops.tests.support.processes import content_for
spec = json.loads(sys.stdin.read())
user = get_user_model().objects.create_user(spec["username"], password="pw-integration-1")
token = Token.objects.create(user=user)
Session.objects.bulk_create(
    (
        Session(id=f"s-{i:05d}", owner=user, title=f"Session {i}", content=content_for(i, spec["size"]))
        for i in range(spec["sessions"])
    ),
    batch_size=200,
)
print(json.dumps({"user_id": user.pk, "token": token.key}))
"""


def content_for(i: int, size: int) -> str:
    """Session ``i``'s content: ``size`` characters, not all ASCII, compressible."""
    unit = f"session {i} — naïve café 数据 {i * 7919 % 1000:03d} "
    return (unit * (size // len(unit) + 1))[:size]


def seed(procs: Processes, *, sessions: int, size: int = 100, username: str = "alice") -> dict:
    """Migrate, then create a user with a token and ``sessions`` sessions s-00000…"""
    procs.run("migrate", "--no-input", "-v", "0")
    spec = json.dumps({"username": username, "sessions": sessions, "size": size})
    out = procs.run("shell", "-c", SETUP, input=spec)
    return json.loads(out.strip().splitlines()[-1]) | {"username": username}


def session_ids(n: int) -> list[str]:
    return [f"s-{i:05d}" for i in range(n)]


def process_env(db: ProcessDB, tmp_path: Path, *, redis: str | None, **extra: str) -> dict:
    """The subprocesses' environment on ``db`` (and Redis under the prefix ``redis``).
    Operations are queued, as in the in-process tests (conftest.py): a test passes
    BULKOPS_INLINE_MAX_SESSIONS to see small operations run in the request."""
    return shared.process_env(
        database_url=db.url,
        workdir=tmp_path,
        redis_prefix=redis,
        BULKOPS_LOG_LEVEL="INFO",
        **{"BULKOPS_INLINE_MAX_SESSIONS": "0", **extra},
    )


def worlds(tmp_path: Path) -> Iterator[Callable[..., tuple[ProcessDB, Processes]]]:
    """For a test module's ``world`` fixture: ``world(postgres=…, redis=…, **env)`` →
    (database, processes), on a database and a Redis prefix of their own (h_ws_<random>);
    every process is killed and the database dropped afterwards."""
    redis_prefix = f"h_ws_{secrets.token_hex(4)}"
    made: list[tuple[ProcessDB, Processes]] = []

    def make(*, postgres: bool, redis: bool, **extra: str) -> tuple[ProcessDB, Processes]:
        if postgres:
            require(postgres_available(), "PostgreSQL")
        if redis:
            require(redis_available(shared.redis_url()), "Redis")
        db = ProcessDB(tmp_path, postgres=postgres)
        procs = Processes(
            tmp_path, process_env(db, tmp_path, redis=redis_prefix if redis else None, **extra)
        )
        made.append((db, procs))
        return db, procs

    yield make
    for db, procs in made:
        try:
            procs.stop_all()
        finally:
            db.drop()


# --- HTTP and WebSocket clients -----------------------------------------------------------------
def http(base: str, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class LiveEventsUnavailable(AssertionError):
    """The server answered ``unavailable``: its channel layer cannot be reached now."""


class Watcher:
    """A ``websockets`` client authenticated by token, recording every message."""

    def __init__(self, base: str, token: str) -> None:
        self.url = base.replace("http", "ws", 1) + "/ws/bulk/"
        self.origin = base
        self.token = token
        self.messages: list[dict] = []
        self.changed = asyncio.Event()

    async def __aenter__(self) -> Watcher:
        from websockets.asyncio.client import connect

        self.connection = await connect(self.url, origin=self.origin, open_timeout=30)
        await self.connection.send(json.dumps({"type": "auth", "token": self.token}))
        reply = json.loads(await asyncio.wait_for(self.connection.recv(), 30))
        if reply.get("code") == "unavailable":  # "reconnect later" (close 1013)
            await self.connection.close()
            raise LiveEventsUnavailable(reply)
        assert reply["type"] == "authenticated", reply
        self.reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self.reader.cancel()
        await self.connection.close()

    async def _read(self) -> None:
        async for raw in self.connection:
            self.messages.append(json.loads(raw))
            self.changed.set()

    def of(self, operation_id: str) -> list[dict]:
        return [m for m in self.messages if m.get("operation_id") == operation_id]

    async def wait_for(self, operation_id: str, kind: str, timeout: float = WAIT) -> dict:
        """The first event ``kind`` of the operation, waiting at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.of(operation_id):
                if message["type"] == kind:
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                got = [m["type"] for m in self.of(operation_id)]
                raise AssertionError(f"no {kind} for {operation_id} in {timeout:.0f} s; got {got}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass
