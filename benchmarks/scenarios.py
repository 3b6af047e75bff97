"""What the benchmark runs: the scenarios, the bench owner's rows, and the engine runs.

Every run starts from fresh rows of a fresh benchmark owner (:class:`BenchData`); the
engine is asked exactly as the API and the admin ask it (``operation_create``) and the
deployed worker (``make_worker``) does the work (:class:`EngineRunner`).
"""

from __future__ import annotations

import datetime
import json
import random
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.utils import timezone

from benchmarks.statistics import DEFAULT_HISTORY
from bulkops.conf import bulkops_settings
from bulkops.engine import Selection, operation_create
from bulkops.engine.queue import delete_operation_tasks, operation_tasks
from bulkops.models import (
    BulkOperation,
    BulkOperationItem,
    OperationChunk,
    OperationSource,
    Session,
    SessionExport,
    SessionStatus,
)
from bulkops.seeding import WORDS, content_text, make_corpus
from bulkops.worker import WorkerThread, make_worker

CONTENT_BYTES = 2000
#: Every n-th session has one export (hard delete with cascade removes them too).
EXPORTS_EVERY = 10
DEFAULT_BATCH_SIZES = (100, 1000, 10_000)
ENGINE_WAIT_TIMEOUT = 600.0
SESSION_TABLE = Session._meta.db_table
EXPORT_TABLE = SessionExport._meta.db_table
#: Rows inserted per statement batch while seeding.
SEED_BATCH = 5000
SESSION_COLUMNS = ("id", "owner_id", "title", "status", "content", "metadata",
                   "created_at", "updated_at", "deleted_at")  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """One benchmarked action: how the engine is asked, and the two references."""

    name: str
    label: str
    action: str
    params: dict[str, Any]
    #: Rows start soft-deleted (restore).
    deleted: bool = False

    @property
    def is_export(self) -> bool:
        return self.action == "export"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("close", "close", "close", {}),
        Scenario("soft_delete", "soft delete", "delete", {"soft_delete": True}),
        Scenario(
            "hard_delete",
            "hard delete (cascade)",
            "delete",
            {"soft_delete": False, "cascade_exports": True},
        ),
        Scenario("restore", "restore", "restore", {}, deleted=True),
        Scenario("archive", "archive (2 KB)", "archive", {}),
        Scenario("export_csv", "export CSV", "export", {"format": "csv"}),
        Scenario("export_json", "export JSON", "export", {"format": "json"}),
    )
}


@dataclass
class Options:
    sessions: int = 20_000
    runs: int = 3
    actions: tuple[str, ...] = tuple(SCENARIOS)
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    #: Raise BULKOPS_MAX_SESSIONS_PER_OPERATION for batches over it (said in the output).
    raise_cap: bool = True
    #: The per-row reference is linear in rows: it is timed on at most this many.
    naive_max_rows: int = 1000
    latency: bool = True
    latency_runs: int = 20
    latency_sizes: tuple[int, ...] = (1, 1000)
    keep: bool = False
    #: The planner statistics the cases run under (benchmarks.statistics): "as-found",
    #: or "production" — ``history`` one-session operations written (and analysed) first.
    statistics: str = "as-found"
    history: int = DEFAULT_HISTORY
    #: "thread": the worker loop polls on a thread, as ``serve`` runs it (default);
    #: "inline": the same worker runs in this thread right after each create (no
    #: polling, so end to end has no pickup wait) — for in-memory SQLite (tests).
    worker: str = "thread"


def action_cap(scenario: Scenario) -> int:
    """The most sessions one operation of this scenario's action may name."""
    if scenario.is_export:
        return bulkops_settings.MAX_EXPORT_SESSIONS
    return bulkops_settings.MAX_SESSIONS_PER_OPERATION


def in_memory_sqlite() -> bool:
    return connection.vendor == "sqlite" and connection.is_in_memory_db()


# --- the bench owner and its rows ----------------------------------------------------------
def _number(session_id: str) -> int:
    return int(session_id.rsplit("-", 1)[1])


class BenchData:
    """A benchmark owner (with the hard-delete permission) and a pool of its sessions,
    re-created in a scenario's starting state before each timed run."""

    def __init__(self, *, sessions: int) -> None:
        self.sessions = sessions
        self.vendor = connection.vendor
        self.rng = random.Random(6)
        self.corpus = make_corpus(self.rng, CONTENT_BYTES)
        self.prefix = f"b{secrets.token_hex(3)}"
        self.pool: list[str] = []
        self.cursor = 0
        self.owner = None
        self.seed_seconds = 0.0

    def _make_owner(self):
        User = get_user_model()
        owner = User.objects.create_user(username=f"bench-{self.prefix}", password=None)
        owner.user_permissions.add(
            Permission.objects.get(
                content_type__app_label="bulkops", codename="hard_delete_session"
            )
        )
        return User.objects.get(pk=owner.pk)

    def _session_rows(self, ids: list[str], *, deleted: bool) -> Iterator[tuple]:
        """Rows in SESSION_COLUMNS order (metadata as JSON text)."""
        now = timezone.now()
        for sid in ids:
            n = _number(sid)
            yield (
                sid,
                self.owner.pk,
                f"{WORDS[n % len(WORDS)].title()} session {n}",
                SessionStatus.ACTIVE,
                content_text(self.rng, self.corpus, CONTENT_BYTES),
                json.dumps({"n": n, "source": "bench", "tags": [WORDS[n % len(WORDS)]]}),
                now - datetime.timedelta(seconds=n),
                now,
                now if deleted else None,
            )

    def _insert(self, ids: list[str], *, deleted: bool = False) -> None:
        """Insert sessions (and every EXPORTS_EVERY-th one's export): COPY on PostgreSQL."""
        rows = self._session_rows(ids, deleted=deleted)
        export_ids = [sid for sid in ids if _number(sid) % EXPORTS_EVERY == 0]
        if self.vendor == "postgresql":
            _copy_rows(rows, export_ids)
        else:
            _bulk_create_rows(rows, export_ids)

    def seed(self) -> None:
        started = time.perf_counter()
        self.owner = self._make_owner()
        self.pool = [f"{self.prefix}-{n:06d}" for n in range(self.sessions)]
        with transaction.atomic():
            for start in range(0, len(self.pool), SEED_BATCH):
                self._insert(self.pool[start : start + SEED_BATCH])
        self.vacuum(analyze=True)
        self.seed_seconds = time.perf_counter() - started

    def _take(self, count: int) -> list[str]:
        """The next ``count`` ids of the pool (cycling), sorted like a selection UI sends."""
        if self.cursor + count > len(self.pool):
            self.cursor = 0
        ids = self.pool[self.cursor : self.cursor + count]
        self.cursor += count
        return ids

    def fresh(self, scenario: Scenario, count: int) -> list[str]:
        """``count`` rows re-created in the scenario's starting state (untimed)."""
        ids = self._take(count)
        with transaction.atomic():
            SessionExport.objects.filter(session_id__in=ids)._raw_delete(connection.alias)
            Session.objects.filter(pk__in=ids)._raw_delete(connection.alias)
            self._insert(ids, deleted=scenario.deleted)
        self.vacuum()
        self.checkpoint()
        return ids

    def vacuum(self, *, analyze: bool = False) -> None:
        """Keep dead tuples of earlier runs out of the next timing (PostgreSQL). Only the
        seed analyses (once, before anything is timed): a run's rows are re-inserted
        without fresh statistics, as a production table's rows are written."""
        if self.vendor != "postgresql" or connection.in_atomic_block:
            return
        with connection.cursor() as cursor:
            command = "VACUUM (ANALYZE)" if analyze else "VACUUM"
            cursor.execute(f"{command} {SESSION_TABLE}, {EXPORT_TABLE}")

    def checkpoint(self) -> None:
        """Write every dirty page out (PostgreSQL, untimed): each timed run starts from
        the same buffer state, not with the dirty pages of the runs before it to write
        (a raw 10,000-row ``UPDATE``: 0.22 s after a checkpoint, 0.28 s after a run)."""
        if self.vendor != "postgresql" or connection.in_atomic_block:
            return
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")

    def cleanup(self) -> None:
        """Delete the benchmark owner, its operations (and their task rows) and sessions."""
        if self.owner is None:
            return
        op_ids = list(BulkOperation.objects.filter(user=self.owner).values_list("pk", flat=True))
        for start in range(0, len(op_ids), 500):
            delete_operation_tasks(op_ids[start : start + 500])
        BulkOperation.objects.filter(user=self.owner).delete()
        SessionExport.objects.filter(session__owner=self.owner).delete()
        Session.objects.filter(owner=self.owner)._raw_delete(connection.alias)
        self.owner.delete()
        self._vacuum_history()

    def _vacuum_history(self) -> None:
        """``VACUUM`` (no ``ANALYZE``) the tables the bench's operations filled: the next
        call otherwise starts among their dead rows (490,000 item rows after a
        production-statistics call made the next small-operations call 2–3× slower)."""
        if self.vendor != "postgresql" or connection.in_atomic_block:
            return
        tables = (BulkOperation, BulkOperationItem, OperationChunk)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM " + ", ".join(m._meta.db_table for m in tables))


def _copy_rows(rows: Iterator[tuple], export_ids: list[str]) -> None:
    now = timezone.now()
    with connection.cursor() as cursor:
        pg = cursor.cursor
        cols = ", ".join(SESSION_COLUMNS)
        with pg.copy(f"COPY {SESSION_TABLE} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        with pg.copy(
            f"COPY {EXPORT_TABLE} (session_id, format, file, size, created_at) FROM STDIN"
        ) as copy:
            for sid in export_ids:
                copy.write_row((sid, "csv", f"{sid}.csv", 128, now))


def _bulk_create_rows(rows: Iterator[tuple], export_ids: list[str]) -> None:
    sessions = []
    for row in rows:
        values = dict(zip(SESSION_COLUMNS, row, strict=True))
        values["metadata"] = json.loads(values["metadata"])
        sessions.append(Session(**values))
    Session.objects.bulk_create(sessions, batch_size=2000)
    SessionExport.objects.bulk_create(
        [
            SessionExport(session_id=sid, format="csv", file=f"{sid}.csv", size=128)
            for sid in export_ids
        ],
        batch_size=2000,
    )


# --- the engine runs -------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineRun:
    """One operation's timings, from its own timestamps."""

    rows: int
    processing_seconds: float
    end_to_end_seconds: float
    #: Task enqueued → operation started, when the task row was found.
    pickup_ms: float | None


class BenchWorkerThread(WorkerThread):
    """The deployed worker loop on a thread, as ``serve`` runs it; an error that ends it
    is kept for the waiting thread to raise."""

    def __init__(self, interval: float) -> None:
        super().__init__(interval=interval)
        self.name = "bulkops-bench-worker"
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            super().run()
        except BaseException as exc:  # surfaced by the waiting thread
            self.error = exc


class EngineRunner:
    """Creates operations as the interfaces do and waits for the worker to finish them:
    on a polling thread ("thread") or run in this thread after each create ("inline")."""

    def __init__(self, *, owner, mode: str, export_dir: Path) -> None:
        self.owner = owner
        self.mode = mode
        self.export_dir = export_dir
        self.worker: BenchWorkerThread | None = None
        self._finished = threading.Event()

    def start(self) -> None:
        from django_tasks.signals import task_finished

        if self.mode == "inline":
            return
        task_finished.connect(self._on_task_finished, dispatch_uid="bulkops-bench")
        self.worker = BenchWorkerThread(bulkops_settings.WORKER_INTERVAL)
        self.worker.start()

    def stop(self) -> None:
        from django_tasks.signals import task_finished

        if self.worker is not None:
            self.worker.stop(timeout=60)
            self.worker = None
        task_finished.disconnect(dispatch_uid="bulkops-bench")

    def _on_task_finished(self, **kwargs) -> None:
        self._finished.set()

    def _wait(self, op: BulkOperation) -> BulkOperation:
        if self.mode == "inline":
            worker = make_worker(interval=0)
            worker.exit_when_empty = True  # run what is queued, then return (``--batch``)
            worker.run()
            op.refresh_from_db()
            return op
        deadline = time.monotonic() + ENGINE_WAIT_TIMEOUT
        while True:
            self._finished.wait(timeout=0.5)
            self._finished.clear()
            op.refresh_from_db()
            if op.is_finished:
                return op
            if self.worker is not None and self.worker.error is not None:
                raise RuntimeError(f"the worker stopped: {self.worker.error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"operation {op.pk} did not finish in time ({op.status})")

    def run(self, scenario: Scenario, ids: list[str]) -> EngineRun:
        """Run ``scenario`` on ``ids`` through the engine; raise unless every row succeeded."""
        op = operation_create(
            user=self.owner,
            action=scenario.action,
            selection=Selection(session_ids=ids),
            params=dict(scenario.params),
            source=OperationSource.CLI,
            reason="bulkops_bench",
        ).operation
        op = self._wait(op)
        if op.status != "completed" or op.succeeded != len(ids):
            raise RuntimeError(
                f"{scenario.label}: the engine did not succeed on every row "
                f"({op.status}, {op.succeeded}/{len(ids)} succeeded; {op.error})"
            )
        if scenario.is_export:
            Path(self.export_dir, op.export_file).unlink(missing_ok=True)
        return EngineRun(
            rows=len(ids),
            processing_seconds=(op.finished_at - op.started_at).total_seconds(),
            end_to_end_seconds=(op.finished_at - op.created_at).total_seconds(),
            pickup_ms=_pickup_ms(op),
        )


def _pickup_ms(op: BulkOperation) -> float | None:
    task = operation_tasks(op.pk).values("enqueued_at").first()
    if task is None:
        return None
    return (op.started_at - task["enqueued_at"]).total_seconds() * 1000
