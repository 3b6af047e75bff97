"""Support for the fault tests (integration/test_faults.py): a PostgreSQL and a Redis of
their own that a test may stop and start at will, a tiny filesystem to fill up, and
the item-row lock that stops a worker in the middle of a chunk.

The shared servers (PostgreSQL on 5432, Redis on 6379) are never touched here: each
instance runs on a free port from a temporary directory, and is killed and removed
afterwards whatever happened.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bulkops.tests.support.helpers import free_port, port_open, require
from bulkops.tests.support.processes import ProcessDB, wait_until

#: Bound on starting or stopping an instance.
INSTANCE_WAIT = 60.0


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server binaries on this machine (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_major)
    return Path(found[-1]).parent if found else None


def _major(path: str) -> int:
    version = Path(path).parts[-3]
    return int(version) if version.isdigit() else 0


def _as_postgres(*argv: str, timeout: float = INSTANCE_WAIT) -> subprocess.CompletedProcess:
    """Run ``argv`` as the ``postgres`` user (PostgreSQL refuses to run as root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False
    )


class DedicatedPostgres:
    """A PostgreSQL server of the test's own: ``initdb`` into a temporary directory,
    trust authentication, listening on 127.0.0.1:<free port>. ``stop()`` is
    ``pg_ctl stop -m immediate`` (a crash: no checkpoint, WAL replayed at the next
    start); ``destroy()`` kills it and removes the directory."""

    #: The WAL writer flushes asynchronous commits at most this often (default
    #: 200 ms): widened so that chunks committed with ``synchronous_commit off`` just
    #: before a crash are very likely lost, which the resume must then cover.
    WAL_WRITER_DELAY = "10s"

    def __init__(self) -> None:
        self.bin = postgres_bin()
        require(self.bin is not None, "PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
        self.root = Path(tempfile.mkdtemp(prefix="bulkops-faults-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.log = self.root / "postgres.log"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        done = _as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}\n{done.stderr}"
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                f"wal_writer_delay = {self.WAL_WRITER_DELAY}\nmax_connections = 50\n"
            )

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        done = _as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-w", "-t", str(int(INSTANCE_WAIT)), "start",
        )  # fmt: skip
        assert done.returncode == 0, f"pg_ctl start failed:\n{done.stdout}\n{self.log_tail()}"

    def stop(self) -> None:
        """Stop at once, as a crash would (``-m immediate``)."""
        done = _as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
        )
        assert done.returncode == 0, f"pg_ctl stop failed:\n{done.stdout}\n{done.stderr}"

    def running(self) -> bool:
        return port_open("127.0.0.1", self.port)

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        except Exception:
            self._kill_postmaster()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)


class DedicatedDB(ProcessDB):
    """``ProcessDB`` on a database of a ``DedicatedPostgres`` (created here; it goes
    with the instance)."""

    def __init__(self, server: DedicatedPostgres, name: str = "faults") -> None:
        import psycopg

        self.postgres = True
        self.name = name
        self.admin = server.url()
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.url = server.url(name)

    def drop(self) -> None:
        """Nothing to do: the whole instance is removed."""


@contextlib.contextmanager
def dedicated_postgres() -> Iterator[DedicatedPostgres]:
    """A started ``DedicatedPostgres``, destroyed on the way out."""
    server = DedicatedPostgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


class DedicatedRedis:
    """A ``redis-server`` of the test's own on 127.0.0.1:<free port>, no persistence.
    ``stop()`` SIGKILLs it (Redis gone, as a crash or a network cut looks to clients);
    ``start()`` brings a fresh, empty one back on the same port."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        require(self.binary is not None, "redis-server on PATH")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="bulkops-faults-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.root), "--protected-mode", "no",
        ]  # fmt: skip
        log = open(self.root / "redis.log", "a")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(
            lambda: port_open("127.0.0.1", self.port) or self.proc.poll() is not None,
            "redis-server to listen",
            timeout=INSTANCE_WAIT,
        )
        assert self.proc.poll() is None, (self.root / "redis.log").read_text()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=INSTANCE_WAIT)
        wait_until(lambda: not port_open("127.0.0.1", self.port), "Redis to be gone", 10)

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def dedicated_redis() -> Iterator[DedicatedRedis]:
    server = DedicatedRedis()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@contextlib.contextmanager
def tiny_filesystem(path: Path, *, size: str = "64k", read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (read-only: nothing can be written, even
    by root, whom permission bits do not stop); unmounted on the way out. Skips when
    this machine does not let the test mount — and fails in CI, which runs as root."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0777" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    require(done.returncode == 0, f"mounting a tmpfs (root/CAP_SYS_ADMIN): {done.stderr}")
    try:
        yield path
    finally:
        unmounted = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
        if unmounted.returncode != 0:
            subprocess.run(["umount", "--lazy", str(path)], capture_output=True, timeout=30)


class ItemLock:
    """Holds one item row of an operation (``SELECT … FOR UPDATE`` on another
    connection), so the worker's chunk that reaches it blocks after applying its
    sessions and before its item outcomes are written: a worker stopped in the middle
    of a chunk with uncommitted changes. ``blocked_pid`` is that worker's backend."""

    def __init__(self, db: ProcessDB, operation_id: str, session_id: str) -> None:
        self.db = db
        self.conn = db.connect()
        self.conn.execute("BEGIN")
        self.conn.execute(
            "SELECT 1 FROM bulkops_bulkoperationitem WHERE operation_id = %s "
            "AND session_id = %s FOR UPDATE",
            (operation_id, session_id),
        )
        self.pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    def blocked_pid(self, timeout: float = 60) -> int:
        """The backend waiting on this lock (a worker mid-chunk), once there is one."""
        # Read from another connection: inside the holder's transaction,
        # pg_stat_activity is a snapshot taken once.
        sql = "SELECT pid, query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"

        def blocked():
            rows = self.db.query(sql, self.pid)
            return rows[0] if rows else None

        pid, query = wait_until(blocked, "a worker to block on the held item row", timeout)
        assert "bulkops_bulkoperationitem" in query, query
        return pid

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.rollback()
        with contextlib.suppress(Exception):
            self.conn.close()
