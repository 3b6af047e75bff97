"""Small operations end to end: ``manage.py serve --no-worker`` (daphne: API and
WebSocket) and N ``db_worker`` processes on the bench's database (and Redis when
``REDIS_URL`` is set), a client POSTing closes and awaiting each one's
``bulk_operation_completed`` on a WebSocket; latency one at a time (split into phases by
the rows' own timestamps) and throughput with a few clients in a closed loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from django.db import connections

from benchmarks.latency import CLOSE_URL
from benchmarks.processes import Processes, cpu_seconds, current_env, healthy, production_env
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


class Fleet:
    """``servers`` × ``serve --no-worker`` (each on a port of its own, the same
    settings: production runs several behind a proxy) and ``workers`` × ``db_worker``
    as subprocesses on the bench's own database (:mod:`benchmarks.processes`)."""

    RATE_LIMIT = "1000000/m"

    def __init__(self, workers: int, *, servers: int = 1) -> None:
        self.workers = workers
        self.servers = servers
        self.workdir = Path(tempfile.mkdtemp(prefix="bulkops-small-ops-"))
        env = current_env(**production_env(self.workdir), BULKOPS_RATE_LIMIT_CLOSE=self.RATE_LIMIT)
        self.procs = Processes(self.workdir, env)
        self.bases: list[str] = []

    @property
    def base(self) -> str:
        """The first server's URL (the latency runs': one at a time)."""
        return self.bases[0]

    def start(self) -> None:
        for n in range(self.servers):
            name = "serve" if n == 0 else f"serve-{n}"
            self.bases.append(self.procs.server(name, embedded=True, worker=False, ready=healthy))
        for n in range(self.workers):
            self.procs.worker(f"small-ops-{n}", interval=None)

    def server_cpu_seconds(self) -> float | None:
        """CPU seconds the servers have used so far (None where ``/proc`` cannot tell):
        taken around a phase, what one operation costs the servers, a steadier figure
        than operations/s on a shared machine."""
        used = [cpu_seconds(p.pid) for name, p in self.procs.running if name.startswith("serve")]
        return None if not used or None in used else sum(used)

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
    """One WebSocket listening for completed events, and POSTs of close operations
    through ``http`` (an ``aiohttp`` session on this event loop, as the load bench's
    clients: the measuring process shares the machine's cores with the servers, so
    its requests should cost little CPU and hop no thread)."""

    EVENT_TIMEOUT = 60.0
    REQUEST_TIMEOUT = 30.0

    def __init__(self, base: str, token: str, http) -> None:
        self.base = base
        self.token = token
        self.http = http
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
        async with self.http.post(f"{self.base}{CLOSE_URL}", json={"session_ids": ids}) as response:
            body = await response.text()
        if response.status != 202:
            raise RuntimeError(f"POST close answered {response.status}: {body}")
        op_id = json.loads(body)["operation_id"]
        if op_id not in self.arrivals:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters[op_id] = waiter
            if op_id not in self.arrivals:  # arrived while the future was made
                await asyncio.wait_for(waiter, self.EVENT_TIMEOUT)
        return sent, op_id, self.arrivals.pop(op_id)


@contextlib.asynccontextmanager
async def listening(base: str, token: str) -> AsyncIterator[Client]:
    """A ``Client`` of the server at ``base``, its WebSocket authenticated and heard."""
    import aiohttp
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Token {token}"}
    timeout = aiohttp.ClientTimeout(total=Client.REQUEST_TIMEOUT)
    async with (
        aiohttp.ClientSession(headers=headers, timeout=timeout) as http,
        connect(base.replace("http", "ws", 1) + "/ws/bulk/", origin=base) as ws,
    ):
        client = Client(base, token, http)
        await ws.send(json.dumps({"type": "auth", "token": token}))
        while json.loads(await ws.recv()).get("type") != "authenticated":
            pass
        listener = asyncio.create_task(client.listen(ws))
        try:
            yield client
        finally:
            listener.cancel()


def _stamps(op_id: str, sent: float, arrived: float) -> list[float | None]:
    """The moments of E2E_PHASES' boundaries; the queue's two are None for an operation
    that never went through the queue (run inside its request)."""
    from bulkops.engine.queue import operation_tasks

    op = BulkOperation.objects.get(pk=op_id)
    task = operation_tasks(op_id).values("enqueued_at", "started_at").first() or {}
    queued = [task[k].timestamp() if task.get(k) else None for k in ("enqueued_at", "started_at")]
    return [
        sent,
        op.created_at.timestamp(),
        *queued,
        op.started_at.timestamp() if op.started_at else None,
        op.finished_at.timestamp() if op.finished_at else None,
        arrived,
    ]


def _e2e_phases(op_ids_sent: list[tuple[str, float, float]]) -> dict[str, float | None]:
    """p50 of each phase (ms) over (operation id, POST sent, event arrived); a phase
    whose boundaries an operation lacks is left out for it."""
    split: dict[str, list[float]] = {k: [] for k in E2E_PHASES}
    try:
        for op_id, sent, arrived in op_ids_sent:
            stamps = _stamps(op_id, sent, arrived)
            for name, a, b in zip(E2E_PHASES, stamps, stamps[1:], strict=False):
                if a is not None and b is not None:
                    split[name].append((b - a) * 1000)
    finally:
        connections.close_all()
    return {k: rounded(percentile(v, 50), 2) for k, v in split.items()}


async def measure_latency(client: Client, batches: list[list[str]]) -> dict[str, Any]:
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


async def measure_throughput(
    clients: list[Client], batches: list[list[str]], concurrency: int
) -> dict:
    """``concurrency`` closed-loop clients, the i-th POSTing through ``clients[i % n]``
    (one per server: round-robin, as a proxy spreads them)."""
    queue = list(reversed(batches))
    latencies: list[float] = []

    async def worker(client: Client) -> None:
        while queue:
            sent, _, arrived = await client.one(queue.pop())
            latencies.append((arrived - sent) * 1000)

    started = time.time()
    await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(concurrency)))
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
