"""Support for the real-process tests (integration/, management/test_serve.py): a database of their own,
server and worker subprocesses that are always killed, a WebSocket watcher, direct
reads of the subprocesses' database.

Nothing here is a test; the module is named so it sits with the tests it serves.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bulkops.tests.support.helpers import REDIS_URL, port_open, redis_available, require

ROOT = Path(__file__).resolve().parents[3]
MANAGE = [sys.executable, str(ROOT / "manage.py")]
DAPHNE = [sys.executable, "-m", "daphne"]
WAIT = 120.0  # seconds: the bound on every wait for a process or an event


def postgres_admin_url() -> str:
    """The PostgreSQL server of DATABASE_URL (or the local default), ``postgres`` db."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        url = "postgres://postgres@127.0.0.1:5432/postgres"
    return urlparse(url)._replace(path="/postgres").geturl()


def postgres_available() -> bool:
    parsed = urlparse(postgres_admin_url())
    return port_open(parsed.hostname or "127.0.0.1", parsed.port or 5432)


def using_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith("postgres")


def using_redis() -> bool:
    return bool(os.environ.get("REDIS_URL"))


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


# --- the subprocesses' database ------------------------------------------------------------
class ProcessDB:
    """A database for the subprocesses: a temporary SQLite file, or a PostgreSQL
    database created for this test and dropped after it. ``query`` reads it directly
    (SQL written with ``%s`` placeholders)."""

    def __init__(self, tmp_path: Path, *, postgres: bool) -> None:
        self.postgres = postgres
        if postgres:
            import psycopg

            self.name = f"h_ws_{secrets.token_hex(4)}"
            self.admin = postgres_admin_url()
            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
            self.url = urlparse(self.admin)._replace(path=f"/{self.name}").geturl()
        else:
            self.path = tmp_path / "db.sqlite3"
            self.url = f"sqlite:///{self.path}"

    def connect(self):
        if self.postgres:
            import psycopg

            return psycopg.connect(self.url, autocommit=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        return conn

    def query(self, sql: str, *params: Any) -> list[tuple]:
        conn = self.connect()
        try:
            if not self.postgres:
                sql = sql.replace("%s", "?")
            return list(conn.execute(sql, params).fetchall())
        finally:
            conn.close()

    def scalar(self, sql: str, *params: Any) -> Any:
        rows = self.query(sql, *params)
        return rows[0][0] if rows else None

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
                conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            conn.close()
            raise
        return conn

    def drop(self) -> None:
        if self.postgres:
            import psycopg

            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# --- subprocesses ---------------------------------------------------------------------------
class Processes:
    """Starts subprocesses with one environment; kills every one of them at the end."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.running: list[tuple[str, subprocess.Popen]] = []

    def run(self, *args: str, input: str | None = None, env: dict | None = None) -> str:
        """Run ``manage.py args`` to completion; return stdout (fail with its output)."""
        done = subprocess.run(
            [*MANAGE, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=WAIT,
            env={**self.env, **(env or {})},
            cwd=ROOT,
        )
        assert done.returncode == 0, f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "w")  # closed in stop_all
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, **(env or {})},
            cwd=ROOT,
            start_new_session=True,
        )
        proc.log = log
        self.running.append((name, proc))
        return proc

    def server(self, name: str, *, embedded: bool = False, env: dict | None = None) -> str:
        """Start ``manage.py serve`` (embedded: server + worker) or daphne; return its
        base URL once it accepts connections."""
        from bulkops.tests.support.helpers import free_port

        port = free_port()
        if embedded:
            argv = [*MANAGE, "serve", "--no-demo", "--host", "127.0.0.1", "--port", str(port)]
        else:
            argv = [*DAPHNE, "-b", "127.0.0.1", "-p", str(port), "project.asgi:application"]
        proc = self.start(name, argv, env)
        wait_until(
            lambda: port_open("127.0.0.1", port) or self.died(proc, name), f"{name} to listen"
        )
        return f"http://127.0.0.1:{port}"

    def worker(self, name: str, env: dict | None = None) -> subprocess.Popen:
        """Start a ``db_worker``; return once it polls its queue."""
        argv = [*MANAGE, "db_worker", "--no-reload", "--no-startup-delay", "--interval", "0.05"]
        proc = self.start(name, [*argv, "--reap-interval", "1", "--worker-id", name], env)
        wait_until(
            lambda: "Starting worker" in self.log(name) or self.died(proc, name),
            f"{name} to start",
        )
        return proc

    def died(self, proc: subprocess.Popen, name: str) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
        return False

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(timeout=WAIT)

    def stop_all(self) -> None:
        for _, proc in self.running:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=30)
            finally:
                proc.log.close()


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
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DATABASE_URL=db.url,
        BULKOPS_EXPORT_DIR=str(tmp_path / "exports"),
        DJANGO_SETTINGS_MODULE="project.settings",
        PYTHONUNBUFFERED="1",
        BULKOPS_LOG_LEVEL="INFO",
    )
    if redis:
        env.update(REDIS_URL=REDIS_URL if not using_redis() else os.environ["REDIS_URL"])
        env.update(REDIS_PREFIX=redis)
    env.update(extra)
    return env


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
            require(redis_available(os.environ.get("REDIS_URL") or REDIS_URL), "Redis")
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
