"""The benchmark behind ``manage.py bulkops_bench`` (issue 6, docs/benchmarks.md).

Three ways of doing the same work are timed on fresh rows of a fresh benchmark owner:

* **engine** — ``operation_create`` (what the API and the admin call) and the real
  django-tasks-db worker (``bulkops.worker.make_worker``, on a thread of this process,
  polling at ``BULKOPS_WORKER_INTERVAL``). *Processing* is the operation's
  ``started_at → finished_at``; *end to end* is ``created_at → finished_at`` (request
  transaction, queue, worker pickup, processing, finalisation).
* **naive** — what a per-row service does: fetch each session, change it, ``save()``
  (one transaction for the whole batch, which flatters it).
* **raw** — the SQL limit: one ``UPDATE … WHERE id = ANY(%s)`` / ``DELETE`` per table,
  ``COPY (SELECT …) TO STDOUT`` for export on PostgreSQL; on SQLite the same single
  statements with ``IN (…)``. Archive has no pure-SQL form (zstandard runs in Python):
  its raw limit is one SELECT, compression, and one UPDATE from arrays/VALUES.

Latency (API ``POST`` → ``bulk_operation_completed`` on a WebSocket) runs against
``manage.py serve`` started as a subprocess on the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime
import importlib.util
import io
import json
import os
import platform
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import django
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection, connections, transaction
from django.test.utils import override_settings
from django.utils import timezone

from bulkops.actions.archive import ARCHIVE_SET_SQL, compress_content, compress_rows
from bulkops.conf import bulkops_settings
from bulkops.models import (
    BulkOperation,
    OperationSource,
    Session,
    SessionExport,
    SessionStatus,
)
from bulkops.seeding import WORDS, _content, _corpus
from bulkops.services import Selection, operation_create

CONTENT_BYTES = 2000
#: Every n-th session has one export (hard delete with cascade removes them too).
EXPORTS_EVERY = 10
DEFAULT_BATCH_SIZES = (100, 1000, 10_000)
ENGINE_WAIT_TIMEOUT = 600.0
SESSION_TABLE = Session._meta.db_table
EXPORT_TABLE = SessionExport._meta.db_table


# --- scenarios --------------------------------------------------------------------------
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


# --- results ------------------------------------------------------------------------------
def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (p95 of 20 samples is the 19th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


@dataclass
class Measure:
    """Rates (rows/s) of repeated runs; the median is what is reported."""

    rows: int = 0
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return median(self.rates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "runs": [round(r, 1) for r in self.rates],
            "median": round(self.median, 1) if self.median else None,
        }


@dataclass
class Case:
    scenario: Scenario
    batch: int
    cap_raised: bool = False
    processing: Measure = field(default_factory=Measure)
    end_to_end: Measure = field(default_factory=Measure)
    naive: Measure = field(default_factory=Measure)
    raw: Measure = field(default_factory=Measure)
    pickup_ms: list[float] = field(default_factory=list)

    def ratios(self) -> dict[str, float | None]:
        return {
            "engine_vs_naive": _ratio(self.processing.median, self.naive.median),
            "engine_vs_raw": _ratio(self.processing.median, self.raw.median),
            "end_to_end_vs_naive": _ratio(self.end_to_end.median, self.naive.median),
            "end_to_end_vs_raw": _ratio(self.end_to_end.median, self.raw.median),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.scenario.name,
            "label": self.scenario.label,
            "engine_action": self.scenario.action,
            "params": self.scenario.params,
            "batch": self.batch,
            "cap_raised": self.cap_raised,
            "engine_processing": self.processing.as_dict(),
            "engine_end_to_end": self.end_to_end.as_dict(),
            "naive": self.naive.as_dict(),
            "raw": self.raw.as_dict(),
            "ratios": self.ratios(),
            "worker_pickup_ms": [round(v, 1) for v in self.pickup_ms],
        }


# --- the benchmark -----------------------------------------------------------------------
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
    #: "thread": the worker loop polls on a thread, as ``serve`` runs it (default);
    #: "inline": the same worker runs in this thread right after each create (no
    #: polling, so end to end has no pickup wait) — for in-memory SQLite (tests).
    worker: str = "thread"


ProgressFn = Callable[[str], None]


class _WorkerThread(threading.Thread):
    """The deployed worker loop (``make_worker``) on a thread, stoppable without touching
    the engine's process-wide shutdown flag."""

    def __init__(self, interval: float) -> None:
        from bulkops.worker import make_worker

        super().__init__(name="bulkops-bench-worker", daemon=True)
        self.worker = make_worker(interval=interval)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # surfaced by the waiting thread
            self.error = exc
        finally:
            connections.close_all()

    def stop(self) -> None:
        self.worker.running = False
        self.join(timeout=60)


class Bench:
    def __init__(self, options: Options, *, progress: ProgressFn | None = None) -> None:
        self.options = options
        self.progress = progress or (lambda _msg: None)
        self.vendor = connection.vendor
        self.rng = random.Random(6)
        self.corpus = _corpus(self.rng, CONTENT_BYTES)
        self.prefix = f"b{secrets.token_hex(3)}"
        self.pool: list[str] = []
        self.cursor = 0
        self.owner = None
        self.worker: _WorkerThread | None = None
        self.export_dir = Path(tempfile.mkdtemp(prefix="bulkops-bench-"))
        self.steps_total = 0
        self.steps_done = 0
        self.notes: list[str] = []
        self.seed_seconds = 0.0
        self.latency: dict[str, Any] = {}
        self._finished = threading.Event()

    # --- steps and progress ---------------------------------------------------------------
    def _plan(self) -> list[tuple[Scenario, int]]:
        plan = []
        for name in self.options.actions:
            scenario = SCENARIOS[name]
            for batch in self.options.batch_sizes:
                if batch > self.options.sessions:
                    self.notes.append(
                        f"{scenario.label} × {batch:,}: skipped, more than --sessions "
                        f"({self.options.sessions:,})."
                    )
                    continue
                cap = self._cap(scenario)
                if batch > cap and not self.options.raise_cap:
                    self.notes.append(
                        f"{scenario.label} × {batch:,}: skipped, over the action's cap ({cap:,})."
                    )
                    continue
                plan.append((scenario, batch))
        return plan

    @staticmethod
    def _cap(scenario: Scenario) -> int:
        if scenario.is_export:
            return bulkops_settings.MAX_EXPORT_SESSIONS
        return bulkops_settings.MAX_SESSIONS_PER_OPERATION

    def _step(self, label: str) -> None:
        self.steps_done += 1
        self.progress(f"{self.steps_done}/{self.steps_total}|{label}")

    # --- data -------------------------------------------------------------------------------
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
        now = timezone.now()
        for sid in ids:
            n = int(sid.rsplit("-", 1)[1])
            yield (
                sid,
                self.owner.pk,
                f"{WORDS[n % len(WORDS)].title()} session {n}",
                SessionStatus.ACTIVE,
                _content(self.rng, self.corpus, CONTENT_BYTES),
                json.dumps({"n": n, "source": "bench", "tags": [WORDS[n % len(WORDS)]]}),
                now - datetime.timedelta(seconds=n),
                now,
                now if deleted else None,
            )

    def _insert(self, ids: list[str], *, deleted: bool = False) -> None:
        """Insert sessions (and every EXPORTS_EVERY-th one's export): COPY on PostgreSQL."""
        rows = self._session_rows(ids, deleted=deleted)
        export_ids = [sid for sid in ids if int(sid.rsplit("-", 1)[1]) % EXPORTS_EVERY == 0]
        now = timezone.now()
        if self.vendor == "postgresql":
            with connection.cursor() as cursor:
                pg = cursor.cursor
                cols = "id, owner_id, title, status, content, metadata, created_at, updated_at"
                with pg.copy(f"COPY {SESSION_TABLE} ({cols}, deleted_at) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                with pg.copy(
                    f"COPY {EXPORT_TABLE} (session_id, format, file, size, created_at) FROM STDIN"
                ) as copy:
                    for sid in export_ids:
                        copy.write_row((sid, "csv", f"{sid}.csv", 128, now))
            return
        fields = (
            "id",
            "owner_id",
            "title",
            "status",
            "content",
            "metadata",
            "created_at",
            "updated_at",
            "deleted_at",
        )
        sessions = []
        for row in rows:
            values = dict(zip(fields, row, strict=True))
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

    def seed(self) -> None:
        started = time.perf_counter()
        self.owner = self._make_owner()
        self.pool = [f"{self.prefix}-{n:06d}" for n in range(self.options.sessions)]
        with transaction.atomic():
            for start in range(0, len(self.pool), 5000):
                self._insert(self.pool[start : start + 5000])
        self._vacuum()
        self.seed_seconds = time.perf_counter() - started

    def _take(self, count: int) -> list[str]:
        """The next ``count`` ids of the pool (cycling), sorted like a selection UI sends."""
        if self.cursor + count > len(self.pool):
            self.cursor = 0
        ids = self.pool[self.cursor : self.cursor + count]
        self.cursor += count
        return ids

    def _fresh(self, scenario: Scenario, count: int) -> list[str]:
        """``count`` rows re-created in the scenario's starting state (untimed)."""
        ids = self._take(count)
        with transaction.atomic():
            SessionExport.objects.filter(session_id__in=ids)._raw_delete(connection.alias)
            Session.objects.filter(pk__in=ids)._raw_delete(connection.alias)
            self._insert(ids, deleted=scenario.deleted)
        self._vacuum()
        return ids

    def _vacuum(self) -> None:
        """Keep dead tuples of earlier runs out of the next timing (PostgreSQL)."""
        if self.vendor != "postgresql" or connection.in_atomic_block:
            return
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {SESSION_TABLE}, {EXPORT_TABLE}")

    # --- engine -----------------------------------------------------------------------------
    def _start_worker(self) -> None:
        from django_tasks.signals import task_finished

        if self.options.worker == "thread" and _in_memory_sqlite():
            self.options.worker = "inline"
            self.notes.append(
                "In-memory SQLite: the worker ran inline (one connection), so end to end "
                "has no pickup wait."
            )
        if self.options.worker == "inline":
            return
        task_finished.connect(self._on_task_finished, dispatch_uid="bulkops-bench")
        self.worker = _WorkerThread(bulkops_settings.WORKER_INTERVAL)
        self.worker.start()

    def _stop_worker(self) -> None:
        from django_tasks.signals import task_finished

        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        task_finished.disconnect(dispatch_uid="bulkops-bench")

    def _on_task_finished(self, **kwargs) -> None:
        self._finished.set()

    def _wait(self, op: BulkOperation) -> BulkOperation:
        if self.options.worker == "inline":
            from bulkops.worker import make_worker

            worker = make_worker(interval=0)
            worker.batch = True  # run what is queued, then return
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

    def engine_run(self, case: Case, ids: list[str]) -> None:
        from django_tasks_db.models import DBTaskResult

        scenario = case.scenario
        op = operation_create(
            user=self.owner,
            action=scenario.action,
            selection=Selection(session_ids=ids),
            params=dict(scenario.params),
            source=OperationSource.CLI,
            reason="bulkops_bench",
        )
        op = self._wait(op)
        if op.status != "completed" or op.succeeded != len(ids):
            raise RuntimeError(
                f"{scenario.label}: the engine did not succeed on every row "
                f"({op.status}, {op.succeeded}/{len(ids)} succeeded; {op.error})"
            )
        processing = (op.finished_at - op.started_at).total_seconds()
        end_to_end = (op.finished_at - op.created_at).total_seconds()
        case.processing.rates.append(len(ids) / max(processing, 1e-6))
        case.end_to_end.rates.append(len(ids) / max(end_to_end, 1e-6))
        case.processing.rows = case.end_to_end.rows = len(ids)
        task = (
            DBTaskResult.objects.filter(args_kwargs__kwargs__operation_id=op.pk)
            .values("enqueued_at")
            .first()
        )
        if task is not None:
            case.pickup_ms.append((op.started_at - task["enqueued_at"]).total_seconds() * 1000)
        if scenario.is_export:
            Path(self.export_dir, op.export_file).unlink(missing_ok=True)

    # --- references ---------------------------------------------------------------------------
    def _timed(self, measure: Measure, ids: list[str], fn: Callable[[list[str]], None]) -> None:
        started = time.perf_counter()
        with transaction.atomic():
            fn(ids)
        elapsed = time.perf_counter() - started
        measure.rows = len(ids)
        measure.rates.append(len(ids) / max(elapsed, 1e-6))

    def naive(self, scenario: Scenario, ids: list[str]) -> None:
        """Fetch each session, check it, change it, save() it — one row at a time."""
        owner = self.owner
        now = timezone.now()
        if scenario.is_export:
            self._naive_export(scenario, ids)
            return
        for sid in ids:
            session = Session.objects.get(pk=sid, owner=owner)
            if session.status == SessionStatus.PROCESSING:
                continue
            if scenario.name == "close" and session.deleted_at is None:
                session.status, session.closed_at = SessionStatus.CLOSED, now
                session.save()
            elif scenario.name == "soft_delete" and session.deleted_at is None:
                session.deleted_at = now
                session.save()
            elif scenario.name == "restore" and session.deleted_at is not None:
                session.deleted_at = None
                session.save()
            elif scenario.name == "archive" and session.deleted_at is None:
                blob, size = compress_content(session.content)
                session.archive_blob, session.archive_original_size = blob, size
                session.archive_compressed_size = len(blob)
                session.content, session.status = "", SessionStatus.ARCHIVED
                session.archived_at = now
                session.save()
            elif scenario.name == "hard_delete":
                session.exports.all().delete()
                session.delete()

    def _naive_export(self, scenario: Scenario, ids: list[str]) -> None:
        from bulkops.actions.export import FIELDS, neutralise

        path = self.export_dir / f"naive.{scenario.params['format']}"
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            if scenario.params["format"] == "csv":
                writer.writerow(FIELDS)
            for sid in ids:
                s = Session.objects.select_related("owner").get(pk=sid, owner=self.owner)
                if s.deleted_at is not None:
                    continue
                record = [
                    s.id,
                    s.title,
                    s.status,
                    s.owner.username,
                    s.created_at.isoformat(),
                    s.updated_at.isoformat(),
                    s.metadata,
                ]
                if scenario.params["format"] == "csv":
                    record[-1] = json.dumps(record[-1], sort_keys=True)
                    writer.writerow([neutralise(str(v)) for v in record])
                else:
                    fh.write(json.dumps(dict(zip(FIELDS, record, strict=True))) + ",\n")
        path.unlink()

    def raw(self, scenario: Scenario, ids: list[str]) -> None:
        """The same change as one statement per table (the SQL limit)."""
        now = timezone.now()
        pg = self.vendor == "postgresql"
        where = "id = ANY(%s)" if pg else f"id IN ({', '.join(['%s'] * len(ids))})"
        id_params: list[Any] = [ids] if pg else list(ids)
        stamp = connection.ops.adapt_datetimefield_value(now)
        with connection.cursor() as cursor:
            if scenario.name == "close":
                cursor.execute(
                    f"UPDATE {SESSION_TABLE} SET status = %s, closed_at = %s, updated_at = %s "
                    f"WHERE {where}",
                    [SessionStatus.CLOSED, stamp, stamp, *id_params],
                )
            elif scenario.name == "soft_delete":
                cursor.execute(
                    f"UPDATE {SESSION_TABLE} SET deleted_at = %s, updated_at = %s WHERE {where}",
                    [stamp, stamp, *id_params],
                )
            elif scenario.name == "restore":
                cursor.execute(
                    f"UPDATE {SESSION_TABLE} SET deleted_at = NULL, updated_at = %s WHERE {where}",
                    [stamp, *id_params],
                )
            elif scenario.name == "hard_delete":
                export_where = where.replace("id", "session_id", 1)
                cursor.execute(f"DELETE FROM {EXPORT_TABLE} WHERE {export_where}", id_params)
                cursor.execute(f"DELETE FROM {SESSION_TABLE} WHERE {where}", id_params)
            elif scenario.name == "archive":
                self._raw_archive(cursor, where, id_params, stamp)
            else:
                self._raw_export(cursor, scenario, where, id_params)

    def _raw_archive(self, cursor, where: str, id_params: list[Any], stamp) -> None:
        cursor.execute(f"SELECT id, content FROM {SESSION_TABLE} WHERE {where}", id_params)
        ids, blobs, osizes, csizes = compress_rows(cursor.fetchall())
        sets = ARCHIVE_SET_SQL
        head = [SessionStatus.ARCHIVED, stamp, stamp]
        if self.vendor == "postgresql":
            cursor.execute(
                f"UPDATE {SESSION_TABLE} AS s SET {sets} FROM unnest(%s::text[], "
                "%s::bytea[], %s::bigint[], %s::bigint[]) AS v(id, blob, osize, csize) "
                "WHERE s.id = v.id",
                [*head, ids, blobs, osizes, csizes],
            )
            return
        values = ", ".join(["(%s, %s, %s, %s)"] * len(ids))
        params = [x for row in zip(ids, blobs, osizes, csizes, strict=True) for x in row]
        cursor.execute(
            f"WITH v(id, blob, osize, csize) AS (VALUES {values}) UPDATE {SESSION_TABLE} "
            f"SET {sets} FROM v WHERE {SESSION_TABLE}.id = v.id",
            [*params, *head],
        )

    def _raw_export(self, cursor, scenario: Scenario, where: str, id_params: list[Any]) -> None:
        user_table = get_user_model()._meta.db_table
        fmt = scenario.params["format"]
        path = self.export_dir / f"raw.{fmt}"
        where = where.replace("id", "s.id", 1)
        select = (
            f"FROM {SESSION_TABLE} s JOIN {user_table} u ON u.id = s.owner_id "
            f"WHERE {where} AND s.deleted_at IS NULL ORDER BY s.id"
        )
        if self.vendor == "postgresql":
            if fmt == "csv":
                sql = (
                    "COPY (SELECT s.id, s.title, s.status, u.username, s.created_at, "
                    f"s.updated_at, s.metadata {select}) TO STDOUT WITH (FORMAT csv, HEADER)"
                )
            else:
                sql = (
                    "COPY (SELECT json_build_object('id', s.id, 'title', s.title, 'status', "
                    "s.status, 'owner', u.username, 'created_at', s.created_at, 'updated_at', "
                    f"s.updated_at, 'metadata', s.metadata) {select}) TO STDOUT"
                )
            with open(path, "wb") as fh, cursor.cursor.copy(sql, id_params) as copy:
                for data in copy:
                    fh.write(data)
        else:
            cursor.execute(
                "SELECT s.id, s.title, s.status, u.username, s.created_at, s.updated_at, "
                f"s.metadata {select}",
                id_params,
            )
            with open(path, "w", encoding="utf-8", newline="") as fh:
                if fmt == "csv":
                    writer = csv.writer(fh)
                    writer.writerow(["id", "title", "status", "owner", "created_at", "updated_at"])
                    writer.writerows(cursor.fetchall())
                else:
                    keys = ("id", "title", "status", "owner", "created_at", "updated_at")
                    for row in cursor.fetchall():
                        record = dict(zip(keys, row[:6], strict=True))
                        record["metadata"] = json.loads(row[6])
                        fh.write(json.dumps(record, default=str) + "\n")
        path.unlink()

    # --- one case -------------------------------------------------------------------------------
    def run_case(self, scenario: Scenario, batch: int) -> Case:
        case = Case(scenario=scenario, batch=batch, cap_raised=batch > self._cap(scenario))
        cap_override = (
            override_settings(BULKOPS_MAX_SESSIONS_PER_OPERATION=batch)
            if case.cap_raised
            else contextlib.nullcontext()
        )
        tag = f"{scenario.label} × {batch:,}"
        with cap_override:
            for run in range(self.options.runs):
                self.engine_run(case, self._fresh(scenario, batch))
                self._step(f"{tag}: engine run {run + 1}")
        naive_rows = min(batch, self.options.naive_max_rows)
        for run in range(self.options.runs):
            ids = self._fresh(scenario, naive_rows)
            self._timed(case.naive, ids, lambda ids: self.naive(scenario, ids))
            self._step(f"{tag}: naive run {run + 1}")
        for run in range(self.options.runs):
            ids = self._fresh(scenario, batch)
            self._timed(case.raw, ids, lambda ids: self.raw(scenario, ids))
            self._step(f"{tag}: raw SQL run {run + 1}")
        return case

    # --- everything -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        plan = self._plan()
        latency_steps = (
            len(self.options.latency_sizes) * (self.options.latency_runs + 2)
            if self.options.latency
            else 0
        )
        self.steps_total = 1 + len(plan) * 3 * self.options.runs + latency_steps
        started = time.perf_counter()
        cases: list[Case] = []
        with override_settings(BULKOPS_EXPORT_DIR=self.export_dir):
            try:
                self.seed()
                self._step(f"seeded {self.options.sessions:,} sessions")
                self._start_worker()
                try:
                    for scenario, batch in plan:
                        cases.append(self.run_case(scenario, batch))
                finally:
                    self._stop_worker()
                if self.options.latency:
                    self.latency = LatencyBench(self).run()
                else:
                    self.latency = {"status": "skipped", "reason": "--skip-latency"}
            finally:
                if not self.options.keep:
                    self.cleanup()
                shutil.rmtree(self.export_dir, ignore_errors=True)
        if any(c.cap_raised for c in cases):
            self.notes.append(
                "Batches marked * are over BULKOPS_MAX_SESSIONS_PER_OPERATION "
                f"({bulkops_settings.MAX_SESSIONS_PER_OPERATION:,}): the bench raised the "
                "cap for those runs only (override_settings)."
            )
        if self.options.naive_max_rows < max((c.batch for c in cases), default=0):
            self.notes.append(
                f"The naive reference is timed on at most {self.options.naive_max_rows:,} rows "
                "per run (its cost is linear in rows)."
            )
        return self.report(cases, time.perf_counter() - started)

    def cleanup(self) -> None:
        from django_tasks_db.models import DBTaskResult

        if self.owner is None:
            return
        op_ids = list(BulkOperation.objects.filter(user=self.owner).values_list("pk", flat=True))
        for start in range(0, len(op_ids), 500):
            batch = op_ids[start : start + 500]
            DBTaskResult.objects.filter(args_kwargs__kwargs__operation_id__in=batch).delete()
        BulkOperation.objects.filter(user=self.owner).delete()
        SessionExport.objects.filter(session__owner=self.owner).delete()
        Session.objects.filter(owner=self.owner)._raw_delete(connection.alias)
        self.owner.delete()

    def report(self, cases: list[Case], seconds: float) -> dict[str, Any]:
        pickups = [v for c in cases for v in c.pickup_ms]
        data = {
            "command": "manage.py bulkops_bench " + " ".join(sys.argv[2:]),
            "finished_at": timezone.now().isoformat(),
            "duration_seconds": round(seconds, 1),
            "machine": machine_facts(),
            "options": {
                "sessions": self.options.sessions,
                "runs": self.options.runs,
                "actions": list(self.options.actions),
                "batch_sizes": list(self.options.batch_sizes),
                "naive_max_rows": self.options.naive_max_rows,
                "worker": self.options.worker,
                "content_bytes": CONTENT_BYTES,
                "exports_every": EXPORTS_EVERY,
            },
            "settings": {
                "chunk_size": bulkops_settings.CHUNK_SIZE,
                "worker_interval_seconds": bulkops_settings.WORKER_INTERVAL,
                "max_sessions_per_operation": bulkops_settings.MAX_SESSIONS_PER_OPERATION,
                "max_export_sessions": bulkops_settings.MAX_EXPORT_SESSIONS,
                "archive_zstd_level": bulkops_settings.ARCHIVE_ZSTD_LEVEL,
            },
            "seed_seconds": round(self.seed_seconds, 2),
            "throughput": [c.as_dict() for c in cases],
            "worker_pickup_ms": {
                "interval_seconds": bulkops_settings.WORKER_INTERVAL,
                "samples": len(pickups),
                "p50": _round(percentile(pickups, 50)),
                "p95": _round(percentile(pickups, 95)),
                "max": _round(max(pickups) if pickups else None),
            },
            "latency": self.latency,
            "notes": self.notes,
        }
        data["targets"] = evaluate_targets(data)
        return data


def _in_memory_sqlite() -> bool:
    return connection.vendor == "sqlite" and connection.is_in_memory_db()


def _round(value: float | None, digits: int = 1) -> float | None:
    return round(value, digits) if value is not None else None


def machine_facts() -> dict[str, Any]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            db_version = f"PostgreSQL {cursor.fetchone()[0]}"
        elif connection.vendor == "sqlite":
            cursor.execute("SELECT sqlite_version()")
            db_version = f"SQLite {cursor.fetchone()[0]}"
        else:
            db_version = connection.vendor
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "database": db_version,
        "database_vendor": connection.vendor,
    }


# --- targets (issue 6) ------------------------------------------------------------------------
def _largest(throughput: list[dict[str, Any]], action: str) -> dict[str, Any] | None:
    rows = [r for r in throughput if r["action"] == action]
    return max(rows, key=lambda r: r["batch"]) if rows else None


def evaluate_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 6's targets (set for PostgreSQL on 2 cores), each at the largest batch run."""
    targets: list[dict[str, Any]] = []
    throughput = data["throughput"]

    def add(name: str, goal: str, value: float | None, met: bool | None) -> None:
        targets.append({"target": name, "goal": goal, "value": value, "met": met})

    for action, floor in (
        ("close", 50_000),
        ("soft_delete", 50_000),
        ("archive", 10_000),
        ("export_csv", 50_000),
        ("export_json", 50_000),
    ):
        row = _largest(throughput, action)
        if row is None:
            continue
        rate = row["engine_processing"]["median"]
        add(
            f"{row['label']} processing (batch {row['batch']:,})",
            f">= {floor:,}/s",
            rate,
            None if rate is None else rate >= floor,
        )
        if action in ("close", "soft_delete"):
            ratio = row["ratios"]["engine_vs_raw"]
            add(
                f"{row['label']} within 3x of raw SQL (batch {row['batch']:,})",
                "engine/raw >= 0.333",
                ratio,
                None if ratio is None else ratio >= 1 / 3,
            )
    for action in SCENARIOS:
        row = _largest(throughput, action)
        if row is None:
            continue
        ratio = row["ratios"]["engine_vs_naive"]
        add(
            f"{row['label']} vs naive (batch {row['batch']:,})",
            "engine/naive >= 30",
            ratio,
            None if ratio is None else ratio >= 30,
        )
    latency = data["latency"].get("sizes", {}).get("1000")
    if latency:
        p50 = latency["p50_ms"]
        add("POST → completed event, 1,000 sessions, p50", "<= 150 ms", p50, p50 <= 150)
    return targets


# --- latency: API POST → bulk_operation_completed on a WebSocket ------------------------------
def latency_prerequisites() -> str | None:
    """Why the latency section cannot run, or None when the API and consumer exist."""
    from django.urls import Resolver404, resolve

    if importlib.util.find_spec("bulkops.consumers") is None:
        return "needs API/WebSocket (bulkops.consumers is missing)"
    try:
        resolve("/api/bulk/sessions/close")
    except Resolver404:
        return "needs API/WebSocket (POST /api/bulk/sessions/close is not routed)"
    if importlib.util.find_spec("websockets") is None:
        return "needs the websockets package"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LatencyBench:
    """POST /api/bulk/sessions/close with a token, timed until the WebSocket client receives
    that operation's ``bulk_operation_completed``; ``manage.py serve`` runs as a subprocess
    on the same database (daphne + its in-process worker, as the embedded default)."""

    RATE_LIMIT = "100000/m"
    #: POST sent → operation row created (request, validation) → worker started it
    #: (items and task committed, pickup) → finished (processing) → event received.
    PHASES = ("request_to_created", "created_to_started", "processing", "finished_to_event")
    STARTUP_TIMEOUT = 90.0
    EVENT_TIMEOUT = 60.0
    WARMUP = 2

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.options = bench.options
        self.arrivals: dict[str, float] = {}

    def run(self) -> dict[str, Any]:
        missing = latency_prerequisites()
        steps = len(self.options.latency_sizes) * (self.options.latency_runs + self.WARMUP)
        if missing:
            for _ in range(steps):
                self.bench._step("latency: skipped")
            return {"status": "skipped", "reason": missing}
        from rest_framework.authtoken.models import Token

        token, _ = Token.objects.get_or_create(user=self.bench.owner)
        port = _free_port()
        env = dict(os.environ, BULKOPS_RATE_LIMIT_CLOSE=self.RATE_LIMIT)
        log = tempfile.TemporaryFile()
        server = subprocess.Popen(
            [
                sys.executable,
                str(Path(settings.BASE_DIR) / "manage.py"),
                "serve",
                "--no-demo",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=settings.BASE_DIR,
        )
        try:
            sizes = asyncio.run(self._measure(port, token.key, server))
        except Exception as exc:
            log.seek(0)
            tail = log.read().decode("utf-8", "replace")[-2000:]
            return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}", "log": tail}
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
        return {
            "status": "measured",
            "server": f"manage.py serve --no-demo --port {port} (subprocess, same database)",
            "rate_limit_override": f"BULKOPS_RATE_LIMIT_CLOSE={self.RATE_LIMIT}",
            "worker_interval_seconds": bulkops_settings.WORKER_INTERVAL,
            "sizes": sizes,
        }

    async def _measure(self, port: int, token: str, server: subprocess.Popen) -> dict:
        import requests
        from websockets.asyncio.client import connect

        base = f"http://127.0.0.1:{port}"
        http = requests.Session()
        http.headers["Authorization"] = f"Token {token}"
        await self._wait_ready(http, base, server)
        results: dict[str, Any] = {}
        async with connect(f"ws://127.0.0.1:{port}/ws/bulk/", origin=base) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            while json.loads(await ws.recv()).get("type") != "authenticated":
                pass
            listener = asyncio.create_task(self._listen(ws))
            try:
                for size in self.options.latency_sizes:
                    samples = []
                    phases: dict[str, list[float]] = {k: [] for k in self.PHASES}
                    for run in range(self.WARMUP + self.options.latency_runs):
                        ids = await asyncio.to_thread(self._fresh_rows, size)
                        started, op_id, arrived = await self._one(http, base, ids)
                        if run >= self.WARMUP:
                            samples.append((arrived - started) * 1000)
                            split = await asyncio.to_thread(self._phases, op_id, started, arrived)
                            for key, value in split.items():
                                phases[key].append(value)
                        self.bench._step(f"latency × {size:,}: run {run + 1}")
                    results[str(size)] = {
                        "phases_p50_ms": {k: _round(percentile(v, 50)) for k, v in phases.items()},
                        "runs": len(samples),
                        "p50_ms": _round(percentile(samples, 50)),
                        "p95_ms": _round(percentile(samples, 95)),
                        "min_ms": _round(min(samples)),
                        "max_ms": _round(max(samples)),
                        "samples_ms": [round(s, 1) for s in samples],
                    }
            finally:
                listener.cancel()
        return results

    def _fresh_rows(self, size: int) -> list[str]:
        try:
            return self.bench._fresh(SCENARIOS["close"], size)
        finally:
            connections.close_all()

    async def _wait_ready(self, http, base: str, server: subprocess.Popen) -> None:
        deadline = time.monotonic() + self.STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"manage.py serve exited with {server.returncode}")
            try:
                response = await asyncio.to_thread(
                    http.get, f"{base}/api/bulk/sessions/info", timeout=2
                )
                if response.status_code == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError("manage.py serve did not answer in time")

    async def _listen(self, ws) -> None:
        async for message in ws:
            event = json.loads(message)
            if event.get("type") in ("bulk_operation_completed", "bulk_operation_failed"):
                self.arrivals[event.get("operation_id")] = time.time()

    def _phases(self, op_id: str, started: float, arrived: float) -> dict[str, float]:
        """Where one POST → event went, from the operation's timestamps (same clock)."""
        try:
            op = BulkOperation.objects.get(pk=op_id)
        finally:
            connections.close_all()
        created = op.created_at.timestamp()
        begun = op.started_at.timestamp()
        finished = op.finished_at.timestamp()
        return {
            "request_to_created": (created - started) * 1000,
            "created_to_started": (begun - created) * 1000,
            "processing": (finished - begun) * 1000,
            "finished_to_event": (arrived - finished) * 1000,
        }

    async def _one(self, http, base: str, ids: list[str]) -> tuple[float, str, float]:
        started = time.time()
        response = await asyncio.to_thread(
            http.post, f"{base}/api/bulk/sessions/close", json={"session_ids": ids}, timeout=30
        )
        if response.status_code != 202:
            raise RuntimeError(f"POST close answered {response.status_code}: {response.text}")
        op_id = response.json()["operation_id"]
        deadline = time.monotonic() + self.EVENT_TIMEOUT
        while op_id not in self.arrivals:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no completed event for {op_id}")
            await asyncio.sleep(0.0005)
        return started, op_id, self.arrivals.pop(op_id)


# --- terminal output ------------------------------------------------------------------------------
def _fmt_rate(value: float | None) -> str:
    return f"{value:,.0f}" if value else "—"


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}×" if value >= 10 else f"{value:.2f}×"


def render_table(data: dict[str, Any]) -> str:
    machine = data["machine"]
    out = io.StringIO()
    out.write(
        f"\nbulkops_bench on {machine['database']} — {machine['cpu_count']} CPUs, Python "
        f"{machine['python']}, Django {machine['django']}; {data['options']['sessions']:,} "
        f"sessions of {data['options']['content_bytes']:,} B seeded in "
        f"{data['seed_seconds']} s; median of {data['options']['runs']} runs; chunk "
        f"{data['settings']['chunk_size']:,}, worker interval "
        f"{data['settings']['worker_interval_seconds']} s\n\n"
    )
    header = (
        "action",
        "batch",
        "processing/s",
        "end-to-end/s",
        "naive/s",
        "raw SQL/s",
        "engine/naive",
        "engine/raw",
    )
    rows = []
    for r in data["throughput"]:
        ratios = r["ratios"]
        rows.append(
            (
                r["label"],
                f"{r['batch']:,}{'*' if r['cap_raised'] else ''}",
                _fmt_rate(r["engine_processing"]["median"]),
                _fmt_rate(r["engine_end_to_end"]["median"]),
                _fmt_rate(r["naive"]["median"]),
                _fmt_rate(r["raw"]["median"]),
                _fmt_ratio(ratios["engine_vs_naive"]),
                _fmt_ratio(ratios["engine_vs_raw"]),
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = "  ".join(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))
        return f"{first}  {rest}\n"

    out.write(line(header))
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in rows:
        out.write(line(row))
    pickup = data["worker_pickup_ms"]
    if pickup["samples"]:
        out.write(
            f"\nWorker pickup (task enqueued → operation started) at interval "
            f"{pickup['interval_seconds']} s: p50 {pickup['p50']} ms, p95 {pickup['p95']} ms, "
            f"max {pickup['max']} ms ({pickup['samples']} operations)\n"
        )
    latency = data["latency"]
    if latency.get("status") == "measured":
        out.write("\nAPI POST /api/bulk/sessions/close → bulk_operation_completed (WebSocket):\n")
        for size, figures in latency["sizes"].items():
            split = ", ".join(
                f"{k.replace('_', ' ')} {v}" for k, v in figures["phases_p50_ms"].items()
            )
            out.write(
                f"  {int(size):>5,} session(s): p50 {figures['p50_ms']} ms, p95 "
                f"{figures['p95_ms']} ms ({figures['runs']} runs); p50 by phase (ms): {split}\n"
            )
    else:
        out.write(f"\nLatency: {latency.get('status')}: {latency.get('reason')}\n")
    if data["targets"]:
        out.write("\nTargets (issue 6, set for PostgreSQL on 2 cores):\n")
        for t in data["targets"]:
            mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            value = t["value"]
            shown = "—" if value is None else (f"{value:,.3g}" if value < 100 else f"{value:,.0f}")
            out.write(f"  [{mark:>6}] {t['target']}: {shown} (goal {t['goal']})\n")
    for note in data["notes"]:
        out.write(f"\nNote: {note}")
    out.write("\n")
    return out.getvalue()
