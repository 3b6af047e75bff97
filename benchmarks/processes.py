"""Real processes: the one way the benchmark and the real-process tests start servers and
workers, give them a database of their own, and always tear everything down.

* :class:`ProcessDB` — a database for the subprocesses: a temporary SQLite file, or a
  PostgreSQL database created for them and dropped afterwards; ``query`` reads it
  directly (SQL written with ``%s`` placeholders, on both).
* :func:`process_env` — their environment: this one without its database, Redis and
  benchmark settings, plus theirs (``production=True``: ``DEBUG=0`` on plain HTTP,
  :func:`production_env`).
* :class:`Processes` — starts ``manage.py`` commands, ``serve`` and daphne servers and
  ``db_worker`` processes with one environment, each in a process group of its own with
  a log file; ``stop_all`` ends every one of them (and their children) whatever
  happened before.

Nothing here imports Django: a test or a bench uses it before or without settings.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
MANAGE = [sys.executable, str(ROOT / "manage.py")]
DAPHNE = [sys.executable, "-m", "daphne"]
#: Seconds: the bound on every wait for a process to start, finish or answer.
WAIT = 120.0
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
#: Never handed to a subprocess: they get their own (or none).
PRIVATE_ENV = ("DATABASE_URL", "REDIS_URL", "REDIS_PREFIX", "BULKOPS_BENCHMARKS")


class ProcessError(AssertionError):
    """A process exited, failed or was not ready in time; the message carries its log.
    An ``AssertionError``, so a test that meets one fails with that message."""


# --- services and waiting ----------------------------------------------------------------------
def postgres_admin_url() -> str:
    """The PostgreSQL server of ``DATABASE_URL`` (or the local default), ``postgres`` db."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        url = DEFAULT_POSTGRES
    return urlparse(url)._replace(path="/postgres").geturl()


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def postgres_available() -> bool:
    parsed = urlparse(postgres_admin_url())
    return port_open(parsed.hostname or "127.0.0.1", parsed.port or 5432)


def redis_available(url: str | None = None) -> bool:
    parsed = urlparse(url or redis_url())
    return port_open(parsed.hostname or "127.0.0.1", parsed.port or 6379)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """The user and system CPU seconds process ``pid`` has used so far (Linux's
    ``/proc/<pid>/stat``), None where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def healthy(base: str) -> bool:
    """``GET /healthz`` answers 200."""
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``predicate`` until it returns something true (returned); after ``timeout``
    seconds raise :class:`ProcessError` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ProcessError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def drop_redis_keys(prefix: str) -> None:
    """Remove every key of a Redis prefix (cache, rate limits, channel layer)."""
    import redis

    client = redis.Redis.from_url(redis_url(), socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


# --- the subprocesses' database ------------------------------------------------------------------
class ProcessDB:
    """A temporary SQLite file in ``workdir``, or a PostgreSQL database ``<prefix>_<random>``
    created now and removed by ``drop()``."""

    def __init__(self, workdir: Path, *, postgres: bool, prefix: str = "h_ws") -> None:
        self.postgres = postgres
        if postgres:
            import psycopg

            self.name = f"{prefix}_{secrets.token_hex(4)}"
            self.admin = postgres_admin_url()
            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
            self.url = urlparse(self.admin)._replace(path=f"/{self.name}").geturl()
        else:
            self.path = workdir / "db.sqlite3"
            self.name = str(self.path)
            self.url = f"sqlite:///{self.path}"

    def connect(self):
        if self.postgres:
            import psycopg

            return psycopg.connect(self.url, autocommit=True)
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

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

    def drop(self) -> None:
        if self.postgres:
            import psycopg

            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def process_env(
    *,
    database_url: str | None,
    workdir: Path,
    redis_prefix: str | None = None,
    production: bool = False,
    **extra: str,
) -> dict[str, str]:
    """This environment for a subprocess: ``database_url`` (None: the default SQLite
    file), Redis under ``redis_prefix`` (None: no Redis), exports in ``workdir``;
    ``production``: ``DEBUG=0`` with a fresh secret on plain HTTP, static files collected
    into ``workdir``; then ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        BULKOPS_EXPORT_DIR=str(workdir / "exports"),
        PYTHONUNBUFFERED="1",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis_prefix:
        env.update(REDIS_URL=redis_url(), REDIS_PREFIX=redis_prefix)
    if production:
        env.update(production_env(workdir))
    env.update(extra)
    return env


def production_env(workdir: Path) -> dict[str, str]:
    """The production settings on plain HTTP: ``DEBUG=0``, a fresh secret, static files
    in ``workdir`` (docs/production.md)."""
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(40),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "SECURE_HSTS_SECONDS": "0",
        "STATIC_ROOT": str(workdir / "static"),
    }


def current_env(**extra: str) -> dict[str, str]:
    """This process's own environment (its database and Redis) plus ``extra``, without
    the benchmark's settings: for servers and workers on the bench's own database."""
    env = {k: v for k, v in os.environ.items() if k != "BULKOPS_BENCHMARKS"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def sigterm_as_interrupt():
    """From now on SIGTERM unwinds like Ctrl-C (``KeyboardInterrupt``), so a bench that is
    told to stop still ends its processes; return the handler it replaced."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


# --- the subprocesses ----------------------------------------------------------------------------
class Processes:
    """Starts subprocesses with one environment, logs in ``workdir``; ``stop_all`` ends
    every one of them."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.running: list[tuple[str, subprocess.Popen]] = []

    @property
    def tmp_path(self) -> Path:
        """The log directory (the tests' name for it)."""
        return self.workdir

    def run(self, *args: str, input: str | None = None, env: dict | None = None) -> str:
        """Run ``manage.py args`` to completion; return stdout (fail with its output)."""
        done = subprocess.run(
            [*MANAGE, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=WAIT * 2,
            env={**self.env, **(env or {})},
            cwd=ROOT,
        )
        if done.returncode:
            raise ProcessError(f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        """Start ``argv`` in a process group of its own (Ctrl-C reaches only the caller,
        which ends the group), output to ``<workdir>/<name>.log``."""
        log = open(self.workdir / f"{name}.log", "w")  # closed in stop_all
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

    def server(
        self,
        name: str,
        *,
        embedded: bool = False,
        worker: bool = True,
        env: dict | None = None,
        ready: Callable[[str], bool] | None = None,
    ) -> str:
        """Start ``manage.py serve`` (``embedded``: with its in-process worker unless
        ``worker`` is False) or daphne; return its base URL once it accepts connections
        (and ``ready(base)`` holds, when given)."""
        port = free_port()
        if embedded:
            argv = [*MANAGE, "serve", "--no-demo", "--host", "127.0.0.1", "--port", str(port)]
            argv += [] if worker else ["--no-worker"]
        else:
            argv = [*DAPHNE, "-b", "127.0.0.1", "-p", str(port), "project.asgi:application"]
        proc = self.start(name, argv, env)
        base = f"http://127.0.0.1:{port}"
        check = ready or (lambda _base: port_open("127.0.0.1", port))
        wait_until(lambda: check(base) or self.died(proc, name), f"{name} to listen")
        return base

    def worker(
        self, name: str, *args: str, interval: float | None = 0.05, env: dict | None = None
    ) -> subprocess.Popen:
        """Start a ``db_worker`` polling every ``interval`` s (None: its default), ``args``
        added; return once it polls its queue."""
        argv = [*MANAGE, "db_worker", "--no-reload", "--no-startup-delay", "--worker-id", name]
        argv += [] if interval is None else ["--interval", str(interval)]
        argv += args
        proc = self.start(name, argv, env)
        wait_until(
            lambda: "Starting worker" in self.log(name) or self.died(proc, name),
            f"{name} to start",
        )
        return proc

    def died(self, proc: subprocess.Popen, name: str) -> bool:
        """False while ``proc`` runs; raise :class:`ProcessError` with its log once not."""
        if proc.poll() is not None:
            raise ProcessError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
        return False

    def first_death(self) -> str | None:
        """The log of the first process that has exited, or None while all run."""
        for name, proc in self.running:
            if proc.poll() is not None:
                return f"{name} exited with {proc.returncode}:\n{self.log(name)}"
        return None

    def log(self, name: str, *, tail: int | None = 4000) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text[-tail:] if tail else text

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to ``proc``'s group; wait for it to exit."""
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(timeout=WAIT)

    def stop_all(self, *, grace: float = 0.0) -> None:
        """End every process and its group: at once (SIGKILL), or with ``grace`` > 0 a
        SIGTERM first and SIGKILL for whatever still runs after ``grace`` seconds."""
        first = signal.SIGTERM if grace > 0 else signal.SIGKILL
        for _, proc in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, first)
        for _, proc in self.running:
            try:
                proc.wait(timeout=grace or 30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                proc.log.close()
        self.running = []

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each running process has used so far (Linux /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        used = {}
        for name, proc in self.running:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[name] = (int(fields[11]) + int(fields[12])) / tick
        return used
