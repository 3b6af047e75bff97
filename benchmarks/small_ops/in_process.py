"""The engine's fixed cost per operation, phase by phase, in this process: one-session
closes created (``operation_create``) and executed (``operation_execute``) here, each
phase timed exclusive of the phases inside it and its SQL statements counted.

The phases inside ``operation_execute`` are the engine's own functions, wrapped for the
run and restored after it; a hook this engine no longer has is reported as not found
(its time and statements then count in ``execute_other``), never guessed.
"""

from __future__ import annotations

import importlib
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.db import connection

IN_PROCESS_PHASES = ("create", "enqueue", "start", "stop_check", "chunk", "finalise", "events")
#: (module, function, phase) wrapped for the breakdown.
HOOKS = (
    ("bulkops.engine.operations", "enqueue_operation", "enqueue"),
    ("bulkops.engine.executor", "_start", "start"),
    ("bulkops.engine.executor", "stop_reason", "stop_check"),
    ("bulkops.engine.executor", "_chunk", "chunk"),
    ("bulkops.engine.executor", "conclude", "finalise"),
    ("bulkops.events", "publish_operation", "events"),
    ("bulkops.events", "publish_sessions_updated", "events"),
)


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


def _patched(profiler: PhaseProfiler) -> tuple[list[tuple[Any, str, Callable]], list[str]]:
    """Wrap every hook this engine has; return (what to restore, hooks not found)."""
    saved, missing = [], []
    for module_name, attr, phase in HOOKS:
        module = importlib.import_module(module_name)
        original = getattr(module, attr, None)
        if original is None:
            missing.append(f"{module_name}.{attr}")
            continue
        saved.append((module, attr, original))
        setattr(module, attr, profiler.wrap(phase, original))
    return saved, missing


def in_process_breakdown(*, owner, fresh: Callable[[int], list[str]], runs: int) -> dict:
    """``runs`` one-session closes created and executed here; per phase: ms and SQL
    statements per operation (means)."""
    from bulkops.engine import Selection, operation_create, operation_execute

    ids = fresh(runs)
    profiler = PhaseProfiler()
    saved, missing = _patched(profiler)
    create = profiler.wrap("create", operation_create)
    execute = profiler.wrap("execute_other", operation_execute)
    started = time.perf_counter()
    try:
        with connection.execute_wrapper(profiler):
            for sid in ids:
                new = create(user=owner, action="close", selection=Selection(session_ids=[sid]))
                execute(operation_id=new.operation.pk)
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
        "hooks_not_found": missing,
    }
