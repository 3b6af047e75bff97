"""Latency: API ``POST`` → ``bulk_operation_completed`` on a WebSocket.

``manage.py serve`` runs as a subprocess on the same database (daphne and its in-process
worker, the embedded default); a ``websockets`` client authenticates with the bench
owner's token and the time from sending the POST to receiving that operation's event is
recorded, split into phases by the operation's own timestamps.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import connections

from benchmarks.processes import Processes, current_env, healthy
from benchmarks.report import percentile, rounded
from bulkops.conf import bulkops_settings
from bulkops.models import BulkOperation

CLOSE_URL = "/api/bulk/sessions/close"


def latency_prerequisites() -> str | None:
    """Why the latency section cannot run, or None when the API route and client exist."""
    from django.urls import Resolver404, resolve

    try:
        resolve(CLOSE_URL)
    except Resolver404:
        return f"needs API/WebSocket (POST {CLOSE_URL} is not routed)"
    if importlib.util.find_spec("websockets") is None:
        return "needs the websockets package"
    return None


def _summary(samples: list[float], phases: dict[str, list[float]]) -> dict[str, Any]:
    return {
        "phases_p50_ms": {k: rounded(percentile(v, 50)) for k, v in phases.items()},
        "runs": len(samples),
        "p50_ms": rounded(percentile(samples, 50)),
        "p95_ms": rounded(percentile(samples, 95)),
        "min_ms": rounded(min(samples)),
        "max_ms": rounded(max(samples)),
        "samples_ms": [round(s, 1) for s in samples],
    }


class LatencyBench:
    """POST /api/bulk/sessions/close with a token, timed until the WebSocket client receives
    that operation's ``bulk_operation_completed``.

    ``fresh(size)`` returns ``size`` session ids of ``owner`` ready to close; ``step(label)``
    reports progress after each POST (warm-ups included).
    """

    RATE_LIMIT = "100000/m"
    #: POST sent → operation row created (request, validation) → worker started it
    #: (items and task committed, pickup) → finished (processing) → event received.
    PHASES = ("request_to_created", "created_to_started", "processing", "finished_to_event")
    EVENT_TIMEOUT = 60.0
    WARMUP = 2

    def __init__(
        self,
        *,
        owner,
        fresh: Callable[[int], list[str]],
        step: Callable[[str], None],
        sizes: tuple[int, ...],
        runs: int,
    ) -> None:
        self.owner = owner
        self.fresh = fresh
        self.step = step
        self.sizes = sizes
        self.runs = runs
        self.arrivals: dict[str, float] = {}

    @classmethod
    def steps(cls, *, sizes: tuple[int, ...], runs: int) -> int:
        """How many times ``step`` is called (for the progress total)."""
        return len(sizes) * (runs + cls.WARMUP)

    def run(self) -> dict[str, Any]:
        """The latency section of the report: measured, skipped (and why) or failed."""
        missing = latency_prerequisites()
        if missing:
            for _ in range(self.steps(sizes=self.sizes, runs=self.runs)):
                self.step("latency: skipped")
            return {"status": "skipped", "reason": missing}
        from rest_framework.authtoken.models import Token

        token, _ = Token.objects.get_or_create(user=self.owner)
        workdir = Path(tempfile.mkdtemp(prefix="bulkops-latency-"))
        procs = Processes(workdir, current_env(BULKOPS_RATE_LIMIT_CLOSE=self.RATE_LIMIT))
        try:
            base = procs.server("serve", embedded=True, ready=healthy)
            sizes = asyncio.run(self._measure(base, token.key))
        except Exception as exc:
            tail = procs.log("serve", tail=2000)
            return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}", "log": tail}
        finally:
            procs.stop_all(grace=30)
            shutil.rmtree(workdir, ignore_errors=True)
        return {
            "status": "measured",
            "server": f"manage.py serve --no-demo at {base} (subprocess, same database)",
            "rate_limit_override": f"BULKOPS_RATE_LIMIT_CLOSE={self.RATE_LIMIT}",
            "worker_interval_seconds": bulkops_settings.WORKER_INTERVAL,
            "sizes": sizes,
        }

    async def _measure(self, base: str, token: str) -> dict:
        import requests
        from websockets.asyncio.client import connect

        http = requests.Session()
        http.headers["Authorization"] = f"Token {token}"
        results: dict[str, Any] = {}
        ws_url = base.replace("http", "ws", 1) + "/ws/bulk/"
        async with connect(ws_url, origin=base) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            while json.loads(await ws.recv()).get("type") != "authenticated":
                pass
            listener = asyncio.create_task(self._listen(ws))
            try:
                for size in self.sizes:
                    results[str(size)] = await self._measure_size(http, base, size)
            finally:
                listener.cancel()
        return results

    async def _measure_size(self, http, base: str, size: int) -> dict[str, Any]:
        samples: list[float] = []
        phases: dict[str, list[float]] = {k: [] for k in self.PHASES}
        for run in range(self.WARMUP + self.runs):
            ids = await asyncio.to_thread(self._fresh_rows, size)
            started, op_id, arrived = await self._one(http, base, ids)
            if run >= self.WARMUP:
                samples.append((arrived - started) * 1000)
                split = await asyncio.to_thread(self._phases, op_id, started, arrived)
                for key, value in split.items():
                    phases[key].append(value)
            self.step(f"latency × {size:,}: run {run + 1}")
        return _summary(samples, phases)

    def _fresh_rows(self, size: int) -> list[str]:
        try:
            return self.fresh(size)
        finally:
            connections.close_all()

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
            http.post, f"{base}{CLOSE_URL}", json={"session_ids": ids}, timeout=30
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
