"""The load run: the world set up, subscribers connected, the API clients' traffic for
``duration`` seconds, then every operation drained and every final event awaited; the
world is torn down whatever happens (Ctrl-C and SIGTERM included)."""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.load.clients import (
    BURST_EVERY,
    BURST_MIX,
    MIX,
    ApiClient,
    Stats,
    Subscriber,
    User,
)
from benchmarks.load.report import (
    ACTIVE_STATUSES,
    build_load_report,
    load_average,
    missing_finals,
    operations_in,
)
from benchmarks.load.world import LoadOptions, LoadWorld
from benchmarks.processes import sigterm_as_interrupt

DRAIN_TIMEOUT = 180.0  # operations to finish after the traffic stops
EVENT_GRACE = 30.0  # final events to arrive after the last operation finished


class LoadBench:
    """``run()`` sets the world up, runs the traffic, waits for every operation and
    every final event, tears everything down and returns the report."""

    def __init__(self, options: LoadOptions, *, progress=None) -> None:
        self.options = options
        self.progress = progress or (lambda _msg: None)
        self.stats = Stats()
        self.subscribers: list[Subscriber] = []
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        #: Set by Ctrl-C / SIGTERM during the traffic: every loop ends, then everything
        #: is torn down (asyncio's own cancellation can be swallowed by ``wait_for``).
        self.stopped = threading.Event()

    def run(self) -> dict[str, Any]:
        before = load_average()
        workdir = Path(tempfile.mkdtemp(prefix="bulkops-load-"))
        world = LoadWorld(self.options, workdir)
        previous = sigterm_as_interrupt()
        try:
            self.progress("setting up: database, migrate, collectstatic, seed, processes")
            started = time.monotonic()
            users = [_user(u, self.options) for u in world.setup()]
            self.timings["setup_seconds"] = time.monotonic() - started
            self.progress(
                f"traffic: {self.options.clients} clients for {self.options.duration:g} s"
            )
            asyncio.run(self._traffic(world, users))
            sigterm_as_interrupt()  # asyncio restored the default on leaving
            if self.stopped.is_set():
                raise KeyboardInterrupt
            return build_load_report(self, world, users, before)
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.progress("cleaning up")
            world.close()
            shutil.rmtree(workdir, ignore_errors=True)

    async def _traffic(self, world: LoadWorld, users: list[User]) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopped.set)
        bases = world.bases
        self.subscribers = [
            Subscriber(users[i % len(users)], bases[i % len(bases)])
            for i in range(self.options.subscribers)
        ]
        try:
            await self._connect_subscribers()
            if not self.stopped.is_set():
                await self._clients(world, users)
            if not self.stopped.is_set():
                self.progress("draining: waiting for every operation to finish")
                await asyncio.to_thread(self._drain, world)
                self.progress("waiting for the final events")
                await self._await_finals(world)
        finally:
            await asyncio.gather(*(s.close() for s in self.subscribers))

    async def _connect_subscribers(self) -> None:
        # Small batches: a burst of hundreds of handshakes is not what is measured.
        for start in range(0, len(self.subscribers), 20):
            if self.stopped.is_set():
                return
            await asyncio.gather(*(s.connect() for s in self.subscribers[start : start + 20]))

    async def _clients(self, world: LoadWorld, users: list[User]) -> None:
        bases = world.bases
        rng = random.Random(12)
        clients = [
            ApiClient(
                users[i % len(users)],
                bases[i % len(bases)],
                self.stats,
                random.Random(rng.random()),
                BURST_MIX if i % BURST_EVERY == 0 else MIX,
            )
            for i in range(self.options.clients)
        ]
        started = time.monotonic()
        cpu_before = world.cpu_seconds()
        until = started + self.options.duration
        await asyncio.gather(*(c.run(until, self.stopped) for c in clients))
        self.timings["traffic_seconds"] = time.monotonic() - started
        self.cpu = {
            name: round(seconds - cpu_before.get(name, 0.0), 1)
            for name, seconds in world.cpu_seconds().items()
        }

    def _drain(self, world: LoadWorld) -> None:
        started = time.monotonic()
        deadline = started + DRAIN_TIMEOUT
        sql = "SELECT count(*) FROM bulkops_bulkoperation WHERE status = ANY(%s)"
        while world.query(sql, list(ACTIVE_STATUSES))[0][0] and not self.stopped.is_set():
            if time.monotonic() > deadline:
                self.notes.append(f"Operations still active after {DRAIN_TIMEOUT:.0f} s.")
                break
            time.sleep(0.25)
        self.timings["drain_seconds"] = time.monotonic() - started

    async def _await_finals(self, world: LoadWorld) -> None:
        operations = await asyncio.to_thread(operations_in, world)
        deadline = time.monotonic() + EVENT_GRACE
        while any(missing_finals(s, operations) for s in self.subscribers):
            if time.monotonic() > deadline or self.stopped.is_set():
                break
            await asyncio.sleep(0.1)


def _user(data: dict[str, Any], options: LoadOptions) -> User:
    ids = [f"{data['prefix']}{i:04d}" for i in range(options.sessions_per_user)]
    return User(user_id=data["user_id"], token=data["token"], session_ids=ids)
