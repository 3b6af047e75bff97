"""The benchmark run: the plan of cases, each case's engine, naive and raw runs, the
latency section, and the report (what ``manage.py bulkops_bench`` calls)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import transaction
from django.test.utils import override_settings

from benchmarks import references
from benchmarks.latency import LatencyBench
from benchmarks.report import Case, Measure, build_report
from benchmarks.scenarios import (
    SCENARIOS,
    BenchData,
    EngineRunner,
    Options,
    Scenario,
    action_cap,
    in_memory_sqlite,
)
from benchmarks.statistics import item_statistics, seed_history
from bulkops.conf import bulkops_settings

ProgressFn = Callable[[str], None]


class Bench:
    """Runs every planned (scenario, batch) case and the latency section; ``run()``
    returns the report. ``progress`` receives ``"<done>/<total>|<label>"`` per step."""

    def __init__(self, options: Options, *, progress: ProgressFn | None = None) -> None:
        self.options = options
        self.progress = progress or (lambda _msg: None)
        self.data = BenchData(sessions=options.sessions)
        self.export_dir = Path(tempfile.mkdtemp(prefix="bulkops-bench-"))
        self.engine: EngineRunner | None = None
        self.steps_total = 0
        self.steps_done = 0
        self.notes: list[str] = []
        self.latency: dict[str, Any] = {}
        self.statistics: dict[str, Any] = {"mode": options.statistics}

    # --- steps and progress ---------------------------------------------------------------
    def _skip_reason(self, scenario: Scenario, batch: int) -> str | None:
        if batch > self.options.sessions:
            return f"skipped, more than --sessions ({self.options.sessions:,})."
        cap = action_cap(scenario)
        if batch > cap and not self.options.raise_cap:
            return f"skipped, over the action's cap ({cap:,})."
        return None

    def _plan(self) -> list[tuple[Scenario, int]]:
        plan = []
        for name in self.options.actions:
            scenario = SCENARIOS[name]
            for batch in self.options.batch_sizes:
                reason = self._skip_reason(scenario, batch)
                if reason:
                    self.notes.append(f"{scenario.label} × {batch:,}: {reason}")
                else:
                    plan.append((scenario, batch))
        return plan

    def _step(self, label: str) -> None:
        self.steps_done += 1
        self.progress(f"{self.steps_done}/{self.steps_total}|{label}")

    # --- one case -------------------------------------------------------------------------------
    def _start_engine(self) -> None:
        if self.options.worker == "thread" and in_memory_sqlite():
            self.options.worker = "inline"
            self.notes.append(
                "In-memory SQLite: the worker ran inline (one connection), so end to end "
                "has no pickup wait."
            )
        self.engine = EngineRunner(
            owner=self.data.owner, mode=self.options.worker, export_dir=self.export_dir
        )
        self.engine.start()

    def _engine_run(self, case: Case, ids: list[str]) -> None:
        run = self.engine.run(case.scenario, ids)
        case.processing.add(run.rows, run.processing_seconds)
        case.end_to_end.add(run.rows, run.end_to_end_seconds)
        if run.pickup_ms is not None:
            case.pickup_ms.append(run.pickup_ms)

    def _timed(self, measure: Measure, ids: list[str], fn: Callable[[list[str]], None]) -> None:
        started = time.perf_counter()
        with transaction.atomic():
            fn(ids)
        measure.add(len(ids), time.perf_counter() - started)

    def _naive(self, scenario: Scenario, ids: list[str]) -> None:
        references.naive(scenario, ids, owner=self.data.owner, export_dir=self.export_dir)

    def _raw(self, scenario: Scenario, ids: list[str]) -> None:
        references.raw(scenario, ids, export_dir=self.export_dir)

    def run_case(self, scenario: Scenario, batch: int) -> Case:
        """``runs`` engine runs of ``batch`` rows, then the naive and raw references."""
        case = Case(scenario=scenario, batch=batch, cap_raised=batch > action_cap(scenario))
        case.statistics = item_statistics()
        cap_override = (
            override_settings(BULKOPS_MAX_SESSIONS_PER_OPERATION=batch)
            if case.cap_raised
            else contextlib.nullcontext()
        )
        tag = f"{scenario.label} × {batch:,}"
        with cap_override:
            for run in range(self.options.runs):
                self._engine_run(case, self.data.fresh(scenario, batch))
                self._step(f"{tag}: engine run {run + 1}")
        naive_rows = min(batch, self.options.naive_max_rows)
        for run in range(self.options.runs):
            ids = self.data.fresh(scenario, naive_rows)
            self._timed(case.naive, ids, lambda ids: self._naive(scenario, ids))
            self._step(f"{tag}: naive run {run + 1}")
        for run in range(self.options.runs):
            ids = self.data.fresh(scenario, batch)
            self._timed(case.raw, ids, lambda ids: self._raw(scenario, ids))
            self._step(f"{tag}: raw SQL run {run + 1}")
        return case

    # --- everything -------------------------------------------------------------------------------
    def _latency_bench(self) -> LatencyBench:
        return LatencyBench(
            owner=self.data.owner,
            fresh=lambda size: self.data.fresh(SCENARIOS["close"], size),
            step=self._step,
            sizes=self.options.latency_sizes,
            runs=self.options.latency_runs,
        )

    def _history(self) -> None:
        """Production-like statistics: many small operations before the large ones."""
        operations = self.options.history
        seconds = seed_history(owner=self.data.owner, operations=operations)
        self.statistics.update(history_operations=operations, history_seconds=round(seconds, 1))
        self._step(f"wrote {operations:,} one-session operations (production-like statistics)")

    def _measure(self, plan: list[tuple[Scenario, int]]) -> list[Case]:
        self.data.seed()
        self._step(f"seeded {self.options.sessions:,} sessions")
        if self.options.statistics == "production":
            self._history()
        self.statistics["at_start"] = item_statistics()
        self._start_engine()
        try:
            cases = [self.run_case(scenario, batch) for scenario, batch in plan]
        finally:
            self.engine.stop()
        self.statistics["at_end"] = item_statistics()
        if self.options.latency:
            self.latency = self._latency_bench().run()
        else:
            self.latency = {"status": "skipped", "reason": "--skip-latency"}
        return cases

    def _closing_notes(self, cases: list[Case]) -> None:
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

    def run(self) -> dict[str, Any]:
        """Seed, run every case and the latency section, clean up; return the report."""
        plan = self._plan()
        latency_steps = (
            LatencyBench.steps(sizes=self.options.latency_sizes, runs=self.options.latency_runs)
            if self.options.latency
            else 0
        )
        history_steps = int(self.options.statistics == "production")
        self.steps_total = 1 + history_steps + len(plan) * 3 * self.options.runs + latency_steps
        started = time.perf_counter()
        with override_settings(BULKOPS_EXPORT_DIR=self.export_dir):
            try:
                cases = self._measure(plan)
            finally:
                if not self.options.keep:
                    self.data.cleanup()
                shutil.rmtree(self.export_dir, ignore_errors=True)
        self._closing_notes(cases)
        return build_report(
            options=self.options,
            cases=cases,
            seconds=time.perf_counter() - started,
            seed_seconds=self.data.seed_seconds,
            latency=self.latency,
            statistics=self.statistics,
            notes=self.notes,
        )
