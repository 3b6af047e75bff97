"""Many small operations (issue 11): operations per second end to end, POST →
``bulk_operation_completed`` latency, and the engine's fixed cost per operation.

Two parts:

* **end to end** — ``manage.py serve --no-worker`` (daphne: API and WebSocket) and 1 or 2
  ``manage.py db_worker`` processes, started as subprocesses on the bench's database (and
  Redis when ``REDIS_URL`` is set: events cross processes through it). For each size
  (sessions per operation) and worker count: *latency* — operations one at a time, POST
  sent → that operation's ``bulk_operation_completed`` received on a WebSocket (p50/p99),
  split into phases by the rows' own timestamps; *throughput* — ``concurrency`` clients
  each POSTing the next operation as soon as the previous one's completed event arrives,
  operations/s = operations / (first POST → last completed event).
* **in process** — the same one-session operation created and executed in this process
  (``operation_create`` then ``operation_execute``), each phase timed (exclusive of the
  phases inside it) and its SQL statements counted: create, enqueue, start, stop checks,
  chunk, finalise, events.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection, connections

from benchmarks.latency import CLOSE_URL
from benchmarks.processes import Processes, current_env, healthy
from benchmarks.report import percentile, rounded
from bulkops.models import BulkOperation

#: Phases of one operation from its rows' timestamps (ms): POST sent → op row created
#: (request, validation) → task enqueued (items and task inserted; the row's
#: ``created_at`` is taken before the transaction) → task claimed by a worker (commit,
#: NOTIFY, wake-up, claim) → operation started (engine start) → finished (chunk,
#: finalise) → completed event received.
E2E_PHASES = (
    "request_to_created",
    "created_to_enqueued",
    "enqueued_to_claimed",
    "claimed_to_started",
    "started_to_finished",
    "finished_to_event",
)
IN_PROCESS_PHASES = ("create", "enqueue", "start", "stop_check", "chunk", "finalise", "events")


@dataclass
class SmallOpsOptions:
    sizes: tuple[int, ...] = (1, 10, 100)
    workers: tuple[int, ...] = (1, 2)
    #: Operations per (size, workers) throughput cell, and sequential latency runs.
    operations: int = 200
    latency_runs: int = 50
    concurrency: int = 4
    #: One-session operations run in process for the breakdown.
    in_process_runs: int = 100


# --- in process: the engine's fixed cost, phase by phase ---------------------------------------
class PhaseProfiler:
    """Wraps functions as named phases: time exclusive of nested phases, and the SQL
    statements each phase sends (``connection.execute_wrapper``)."""

    def __init__(self) -> None:
        self.stack: list[list] = []
        self.ms: dict[str, float] = defaultdict(float)
        self.queries: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            self.stack.append([name, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                _, started, inner = self.stack.pop()
                total = time.perf_counter() - started
                self.ms[name] += (total - inner) * 1000
                if self.stack:
                    self.stack[-1][2] += total

        return timed

    def __call__(self, execute, sql, params, many, context):
        self.queries[self.stack[-1][0] if self.stack else "other"] += 1
        return execute(sql, params, many, context)


def _patched(profiler: PhaseProfiler) -> list[tuple[Any, str, Callable]]:
    from bulkops import events
    from bulkops.engine import executor, operations

    targets = [
        (operations, "enqueue_operation", "enqueue"),
        (executor, "_start", "start"),
        (executor, "_stop_reason", "stop_check"),
        (executor, "_chunk", "chunk"),
        (executor, "_conclude", "finalise"),
        (events, "publish_operation", "events"),
        (events, "publish_sessions_updated", "events"),
    ]
    saved = []
    for module, attr, phase in targets:
        original = getattr(module, attr)
        saved.append((module, attr, original))
        setattr(module, attr, profiler.wrap(phase, original))
    return saved


def in_process_breakdown(*, owner, fresh: Callable[[int], list[str]], runs: int) -> dict:
    """``runs`` one-session closes created and executed here; per phase: ms and SQL
    statements per operation (means)."""
    from bulkops.engine import Selection, operation_create, operation_execute

    ids = fresh(runs)
    profiler = PhaseProfiler()
    saved = _patched(profiler)
    create = profiler.wrap("create", operation_create)
    execute = profiler.wrap("execute_other", operation_execute)
    started = time.perf_counter()
    try:
        with connection.execute_wrapper(profiler):
            for sid in ids:
                op = create(user=owner, action="close", selection=Selection(session_ids=[sid]))
                execute(operation_id=op.pk)
    finally:
        for module, attr, original in saved:
            setattr(module, attr, original)
    total_ms = (time.perf_counter() - started) * 1000
    phases = {
        name: {
            "ms": round(profiler.ms.get(name, 0.0) / runs, 2),
            "queries": round(profiler.queries.get(name, 0) / runs, 1),
        }
        for name in (*IN_PROCESS_PHASES, "execute_other")
    }
    return {
        "runs": runs,
        "ms_per_operation": round(total_ms / runs, 2),
        "queries_per_operation": round(sum(profiler.queries.values()) / runs, 1),
        "operations_per_second": round(runs / (total_ms / 1000), 1),
        "phases": phases,
    }


# --- end to end: server + db_workers ----------------------------------------------------------
class Fleet:
    """``serve --no-worker`` and ``workers`` × ``db_worker`` as subprocesses on the
    bench's own database (:mod:`benchmarks.processes`)."""

    RATE_LIMIT = "1000000/m"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.workdir = Path(tempfile.mkdtemp(prefix="bulkops-small-ops-"))
        self.procs = Processes(self.workdir, current_env(BULKOPS_RATE_LIMIT_CLOSE=self.RATE_LIMIT))
        self.base = ""

    def start(self) -> None:
        self.base = self.procs.server("serve", embedded=True, worker=False, ready=healthy)
        for n in range(self.workers):
            self.procs.worker(f"small-ops-{n}", interval=None)

    def died(self) -> str | None:
        return self.procs.first_death()

    def tail(self) -> str:
        return "\n".join(self.procs.log(name, tail=1500) for name, _ in self.procs.running)

    def stop(self) -> None:
        try:
            self.procs.stop_all(grace=30)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Client:
    """One WebSocket listening for completed events, and POSTs of close operations."""

    EVENT_TIMEOUT = 60.0

    def __init__(self, base: str, token: str) -> None:
        import requests

        self.base = base
        self.token = token
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        self.arrivals: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future] = {}

    async def listen(self, ws) -> None:
        async for message in ws:
            event = json.loads(message)
            if event.get("type") in ("bulk_operation_completed", "bulk_operation_failed"):
                op_id = event.get("operation_id")
                self.arrivals[op_id] = time.time()
                waiter = self.waiters.pop(op_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def one(self, ids: list[str]) -> tuple[float, str, float]:
        """POST, then wait for the operation's completed event: (sent, id, arrived)."""
        sent = time.time()
        response = await asyncio.to_thread(
            self.http.post, f"{self.base}{CLOSE_URL}", json={"session_ids": ids}, timeout=30
        )
        if response.status_code != 202:
            raise RuntimeError(f"POST close answered {response.status_code}: {response.text}")
        op_id = response.json()["operation_id"]
        if op_id not in self.arrivals:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters[op_id] = waiter
            if op_id not in self.arrivals:  # arrived while the future was made
                await asyncio.wait_for(waiter, self.EVENT_TIMEOUT)
        return sent, op_id, self.arrivals.pop(op_id)


def _e2e_phases(op_ids_sent: list[tuple[str, float, float]]) -> dict[str, float | None]:
    """p50 of each phase (ms) over (operation id, POST sent, event arrived)."""
    from bulkops.engine.queue import operation_tasks

    split: dict[str, list[float]] = {k: [] for k in E2E_PHASES}
    try:
        for op_id, sent, arrived in op_ids_sent:
            op = BulkOperation.objects.get(pk=op_id)
            task = operation_tasks(op_id).values("enqueued_at", "started_at").first()
            stamps = [
                sent,
                op.created_at.timestamp(),
                task["enqueued_at"].timestamp(),
                task["started_at"].timestamp(),
                op.started_at.timestamp(),
                op.finished_at.timestamp(),
                arrived,
            ]
            for name, a, b in zip(E2E_PHASES, stamps, stamps[1:], strict=False):
                split[name].append((b - a) * 1000)
    finally:
        connections.close_all()
    return {k: rounded(percentile(v, 50), 2) for k, v in split.items()}


async def _latency(client: Client, batches: list[list[str]]) -> dict[str, Any]:
    samples, done = [], []
    for ids in batches:
        sent, op_id, arrived = await client.one(ids)
        samples.append((arrived - sent) * 1000)
        done.append((op_id, sent, arrived))
    phases = await asyncio.to_thread(_e2e_phases, done)
    return {
        "runs": len(samples),
        "p50_ms": rounded(percentile(samples, 50)),
        "p99_ms": rounded(percentile(samples, 99)),
        "max_ms": rounded(max(samples)),
        "phases_p50_ms": phases,
    }


async def _throughput(client: Client, batches: list[list[str]], concurrency: int) -> dict:
    queue = list(reversed(batches))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            sent, _, arrived = await client.one(queue.pop())
            latencies.append((arrived - sent) * 1000)

    started = time.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.time() - started
    return {
        "operations": len(batches),
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "operations_per_second": round(len(batches) / seconds, 1),
        "sessions_per_second": round(sum(len(b) for b in batches) / seconds, 1),
        "latency_p50_ms": rounded(percentile(latencies, 50)),
        "latency_p99_ms": rounded(percentile(latencies, 99)),
    }


# --- the whole section ---------------------------------------------------------------------------
class SmallOpsBench:
    """Seeds the bench owner's sessions, runs the in-process breakdown, then each worker
    count's fleet; ``run()`` returns the report's ``small_ops`` section."""

    WARMUP = 3

    def __init__(self, options: SmallOpsOptions, *, step: Callable[[str], None]) -> None:
        from benchmarks.scenarios import BenchData

        self.options = options
        self.step = step
        per_cell = (options.latency_runs + options.operations + self.WARMUP) * max(options.sizes)
        self.data = BenchData(sessions=max(per_cell, options.in_process_runs))

    def steps(self) -> int:
        return 2 + len(self.options.workers) * (1 + 2 * len(self.options.sizes))

    def _fresh(self, count: int) -> list[str]:
        from benchmarks.scenarios import SCENARIOS

        try:
            return self.data.fresh(SCENARIOS["close"], count)
        finally:
            connections.close_all()

    def _batches(self, size: int, count: int) -> list[list[str]]:
        ids = self._fresh(size * count)
        return [ids[i : i + size] for i in range(0, len(ids), size)]

    async def _cells(self, fleet: Fleet, token: str) -> list[dict[str, Any]]:
        from websockets.asyncio.client import connect

        client = Client(fleet.base, token)
        cells = []
        ws_url = fleet.base.replace("http", "ws", 1) + "/ws/bulk/"
        async with connect(ws_url, origin=fleet.base) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            while json.loads(await ws.recv()).get("type") != "authenticated":
                pass
            listener = asyncio.create_task(client.listen(ws))
            try:
                for batch in await asyncio.to_thread(self._batches, 1, self.WARMUP):
                    await client.one(batch)
                self.step(f"{fleet.workers} worker(s): ready")
                for size in self.options.sizes:
                    cells.append(await self._cell(client, fleet.workers, size))
            finally:
                listener.cancel()
        return cells

    async def _cell(self, client: Client, workers: int, size: int) -> dict[str, Any]:
        opts = self.options
        batches = await asyncio.to_thread(self._batches, size, opts.latency_runs)
        latency = await _latency(client, batches)
        self.step(f"{workers} worker(s) × {size}: latency")
        batches = await asyncio.to_thread(self._batches, size, opts.operations)
        throughput = await _throughput(client, batches, opts.concurrency)
        self.step(f"{workers} worker(s) × {size}: throughput")
        return {"workers": workers, "sessions": size, "latency": latency, **throughput}

    def run(self) -> dict[str, Any]:
        from rest_framework.authtoken.models import Token

        self.data.seed()
        self.step(f"seeded {self.data.sessions:,} sessions")
        try:
            breakdown = in_process_breakdown(
                owner=self.data.owner, fresh=self._fresh, runs=self.options.in_process_runs
            )
            self.step("in-process breakdown")
            token = Token.objects.get_or_create(user=self.data.owner)[0].key
            connections.close_all()
            cells = []
            for workers in self.options.workers:
                fleet = Fleet(workers)
                try:
                    fleet.start()
                    cells += asyncio.run(self._cells(fleet, token))
                except Exception as exc:
                    raise RuntimeError(f"{exc!r}; the fleet's log:\n{fleet.tail()}") from exc
                finally:
                    fleet.stop()
        finally:
            self.data.cleanup()
        return {
            "options": vars(self.options) | {"sizes": list(self.options.sizes)},
            "in_process": breakdown,
            "end_to_end": cells,
            "channel_layer": "redis" if os.environ.get("REDIS_URL") else "in-memory",
        }


def render_small_ops(section: dict[str, Any]) -> str:
    """The small-operation section as text."""
    ip = section["in_process"]
    lines = [
        "",
        f"Small operations, in process ({ip['runs']} one-session closes): "
        f"{ip['ms_per_operation']} ms and {ip['queries_per_operation']} SQL statements per "
        f"operation ({ip['operations_per_second']} ops/s on one thread)",
    ]
    for name, phase in ip["phases"].items():
        lines.append(f"  {name:<14} {phase['ms']:>7.2f} ms  {phase['queries']:>5} statements")
    lines.append(
        f"\nEnd to end (serve --no-worker + db_worker × N, channel layer "
        f"{section['channel_layer']}): ops/s with {section['options']['concurrency']} "
        "clients; latency one at a time"
    )
    lines.append(
        "workers  sessions   ops/s  sessions/s  p50 ms  p99 ms  | phases p50 ms: "
        + " / ".join(E2E_PHASES)
    )
    for c in section["end_to_end"]:
        lat = c["latency"]
        phases = " / ".join(str(lat["phases_p50_ms"][k]) for k in E2E_PHASES)
        lines.append(
            f"{c['workers']:>7}  {c['sessions']:>8}  {c['operations_per_second']:>6}  "
            f"{c['sessions_per_second']:>10}  {lat['p50_ms']:>6}  {lat['p99_ms']:>6}  | {phases}"
        )
    return "\n".join(lines) + "\n"
