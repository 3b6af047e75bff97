"""The small-operation section: the bench owner's sessions, the in-process breakdown,
then each worker count's fleet end to end; its targets and its text."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections

from benchmarks.small_ops.end_to_end import (
    E2E_PHASES,
    Client,
    Fleet,
    listening,
    measure_latency,
    measure_throughput,
)
from benchmarks.small_ops.in_process import in_process_breakdown
from benchmarks.targets import small_ops_targets, target_lines


@dataclass
class SmallOpsOptions:
    sizes: tuple[int, ...] = (1, 10, 100)
    workers: tuple[int, ...] = (1, 2)
    #: Operations per (size, workers) throughput cell, and sequential latency runs.
    operations: int = 200
    latency_runs: int = 50
    concurrency: int = 4
    #: ``serve`` processes the concurrent clients are spread over (round-robin).
    servers: int = 1
    #: One-session operations run in process for the breakdown.
    in_process_runs: int = 100


class SmallOpsBench:
    """Seeds the bench owner's sessions, runs the in-process breakdown, then each worker
    count's fleet; ``run()`` returns the report's ``small_ops`` section."""

    WARMUP = 3

    def __init__(self, options: SmallOpsOptions, *, step: Callable[[str], None]) -> None:
        from benchmarks.scenarios import BenchData

        self.options = options
        self.step = step
        warmup = self.WARMUP * options.servers
        per_cell = (options.latency_runs + options.operations + warmup) * max(options.sizes)
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
        async with contextlib.AsyncExitStack() as stack:
            # One client per server, each listening on its own server's WebSocket (an
            # operation's events reach that server's connections without Redis too).
            clients = [await stack.enter_async_context(listening(b, token)) for b in fleet.bases]
            for client in clients:
                for batch in await asyncio.to_thread(self._batches, 1, self.WARMUP):
                    await client.one(batch)
            self.step(f"{fleet.workers} worker(s): ready")
            return [await self._cell(clients, fleet, size) for size in self.options.sizes]

    async def _cell(self, clients: list[Client], fleet: Fleet, size: int) -> dict[str, Any]:
        opts, workers = self.options, fleet.workers
        batches = await asyncio.to_thread(self._batches, size, opts.latency_runs)
        latency = await measure_latency(clients[0], batches)
        self.step(f"{workers} worker(s) × {size}: latency")
        batches = await asyncio.to_thread(self._batches, size, opts.operations)
        before = fleet.server_cpu_seconds()
        throughput = await measure_throughput(clients, batches, opts.concurrency)
        after = fleet.server_cpu_seconds()
        self.step(f"{workers} worker(s) × {size}: throughput")
        cpu_ms = None
        if before is not None and after is not None:
            cpu_ms = round((after - before) * 1000 / len(batches), 2)
        cell = {"workers": workers, "servers": len(clients), "sessions": size}
        return {**cell, "latency": latency, **throughput, "server_cpu_ms_per_operation": cpu_ms}

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
                fleet = Fleet(workers, servers=self.options.servers)
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
        } | {"targets": small_ops_targets({"end_to_end": cells})}


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
        f"\nEnd to end (serve --no-worker × servers + db_worker × N, channel layer "
        f"{section['channel_layer']}): ops/s with {section['options']['concurrency']} "
        "clients spread over the servers; latency one at a time (the first server)"
    )
    lines.append(
        "servers  workers  sessions   ops/s  sessions/s  p50 ms  p99 ms  server CPU ms/op  "
        "| phases p50 ms: " + " / ".join(E2E_PHASES)
    )
    for c in section["end_to_end"]:
        lat = c["latency"]
        phases = " / ".join(str(lat["phases_p50_ms"][k]) for k in E2E_PHASES)
        lines.append(
            f"{c.get('servers', 1):>7}  {c['workers']:>7}  {c['sessions']:>8}  "
            f"{c['operations_per_second']:>6}  "
            f"{c['sessions_per_second']:>10}  {lat['p50_ms']:>6}  {lat['p99_ms']:>6}  "
            f"{c.get('server_cpu_ms_per_operation')!s:>16}  | {phases}"
        )
    return "\n".join(lines) + "\n" + target_lines(section.get("targets", []))
