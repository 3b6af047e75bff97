"""The benchmark's figures: measures and cases, the JSON report, the targets, the
terminal table, and the machine and versions they were measured on."""

from __future__ import annotations

import io
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import django
from django.db import connection
from django.utils import timezone

from benchmarks.scenarios import CONTENT_BYTES, EXPORTS_EVERY, Options, Scenario
from benchmarks.targets import evaluate_targets, target_lines
from bulkops.conf import bulkops_settings

TABLE_HEADER = (
    "action",
    "batch",
    "processing/s",
    "end-to-end/s",
    "naive/s",
    "raw SQL/s",
    "engine/naive",
    "engine/raw",
)


# --- statistics ---------------------------------------------------------------------------
def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (p95 of 20 samples is the 19th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def rounded(value: float | None, digits: int = 1) -> float | None:
    return round(value, digits) if value is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b to three significant figures (a tiny batch on a busy machine can be
    0.0004x raw SQL: three decimals would round it to 0)."""
    return float(f"{a / b:.3g}") if a and b else None


# --- results ------------------------------------------------------------------------------
@dataclass
class Measure:
    """Rates (rows/s) of repeated runs; the median is what is reported."""

    rows: int = 0
    rates: list[float] = field(default_factory=list)

    def add(self, rows: int, seconds: float) -> None:
        self.rows = rows
        self.rates.append(rows / max(seconds, 1e-6))

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
    """One scenario at one batch size: the engine's two rates and the two references."""

    scenario: Scenario
    batch: int
    cap_raised: bool = False
    processing: Measure = field(default_factory=Measure)
    end_to_end: Measure = field(default_factory=Measure)
    naive: Measure = field(default_factory=Measure)
    raw: Measure = field(default_factory=Measure)
    pickup_ms: list[float] = field(default_factory=list)
    #: What the planner believed about the item table when the case started.
    statistics: dict[str, Any] = field(default_factory=dict)

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
            "item_statistics": self.statistics,
        }


# --- the JSON report ------------------------------------------------------------------------
def machine_facts() -> dict[str, Any]:
    """CPUs, platform, Python, Django and the database server's version."""
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


def _options(options: Options) -> dict[str, Any]:
    return {
        "sessions": options.sessions,
        "runs": options.runs,
        "actions": list(options.actions),
        "batch_sizes": list(options.batch_sizes),
        "naive_max_rows": options.naive_max_rows,
        "worker": options.worker,
        "statistics": options.statistics,
        "history_operations": options.history if options.statistics == "production" else 0,
        "content_bytes": CONTENT_BYTES,
        "exports_every": EXPORTS_EVERY,
    }


def _settings() -> dict[str, Any]:
    return {
        "chunk_size": bulkops_settings.CHUNK_SIZE,
        "worker_interval_seconds": bulkops_settings.WORKER_INTERVAL,
        "max_sessions_per_operation": bulkops_settings.MAX_SESSIONS_PER_OPERATION,
        "max_export_sessions": bulkops_settings.MAX_EXPORT_SESSIONS,
        "archive_zstd_level": bulkops_settings.ARCHIVE_ZSTD_LEVEL,
    }


def _pickups(cases: list[Case]) -> dict[str, Any]:
    pickups = [v for c in cases for v in c.pickup_ms]
    return {
        "interval_seconds": bulkops_settings.WORKER_INTERVAL,
        "samples": len(pickups),
        "p50": rounded(percentile(pickups, 50)),
        "p95": rounded(percentile(pickups, 95)),
        "max": rounded(max(pickups) if pickups else None),
    }


def build_report(
    *,
    options: Options,
    cases: list[Case],
    seconds: float,
    seed_seconds: float,
    latency: dict[str, Any],
    statistics: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    """Every figure of one benchmark run, as written to ``--json``."""
    data = {
        "command": "manage.py bulkops_bench " + " ".join(sys.argv[2:]),
        "finished_at": timezone.now().isoformat(),
        "duration_seconds": round(seconds, 1),
        "machine": machine_facts(),
        "options": _options(options),
        "settings": _settings(),
        "seed_seconds": round(seed_seconds, 2),
        "throughput": [c.as_dict() for c in cases],
        "worker_pickup_ms": _pickups(cases),
        "latency": latency,
        "statistics": statistics,
        "notes": notes,
    }
    data["targets"] = evaluate_targets(data)
    return data


# --- terminal output ------------------------------------------------------------------------------
def _fmt_rate(value: float | None) -> str:
    return f"{value:,.0f}" if value else "—"


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}×" if value >= 10 else f"{value:.2f}×"


def _heading(data: dict[str, Any]) -> str:
    machine = data["machine"]
    return (
        f"\nbulkops_bench on {machine['database']} — {machine['cpu_count']} CPUs, Python "
        f"{machine['python']}, Django {machine['django']}; {data['options']['sessions']:,} "
        f"sessions of {data['options']['content_bytes']:,} B seeded in "
        f"{data['seed_seconds']} s; median of {data['options']['runs']} runs; chunk "
        f"{data['settings']['chunk_size']:,}, worker interval "
        f"{data['settings']['worker_interval_seconds']} s\n\n"
    )


def _table_row(r: dict[str, Any]) -> tuple[str, ...]:
    ratios = r["ratios"]
    return (
        r["label"],
        f"{r['batch']:,}{'*' if r['cap_raised'] else ''}",
        _fmt_rate(r["engine_processing"]["median"]),
        _fmt_rate(r["engine_end_to_end"]["median"]),
        _fmt_rate(r["naive"]["median"]),
        _fmt_rate(r["raw"]["median"]),
        _fmt_ratio(ratios["engine_vs_naive"]),
        _fmt_ratio(ratios["engine_vs_raw"]),
    )


def _throughput_table(throughput: list[dict[str, Any]]) -> str:
    rows = [_table_row(r) for r in throughput]
    widths = [max(len(str(x)) for x in col) for col in zip(TABLE_HEADER, *rows, strict=True)]

    def line(cells) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = "  ".join(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))
        return f"{first}  {rest}\n"

    lines = [line(TABLE_HEADER), "  ".join("-" * w for w in widths) + "\n"]
    return "".join(lines + [line(row) for row in rows])


def _pickup_line(pickup: dict[str, Any]) -> str:
    if not pickup["samples"]:
        return ""
    return (
        f"\nWorker pickup (task enqueued → operation started) at interval "
        f"{pickup['interval_seconds']} s: p50 {pickup['p50']} ms, p95 {pickup['p95']} ms, "
        f"max {pickup['max']} ms ({pickup['samples']} operations)\n"
    )


def _latency_lines(latency: dict[str, Any]) -> str:
    if latency.get("status") != "measured":
        return f"\nLatency: {latency.get('status')}: {latency.get('reason')}\n"
    out = "\nAPI POST /api/bulk/sessions/close → bulk_operation_completed (WebSocket):\n"
    for size, figures in latency["sizes"].items():
        split = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in figures["phases_p50_ms"].items())
        out += (
            f"  {int(size):>5,} session(s): p50 {figures['p50_ms']} ms, p95 "
            f"{figures['p95_ms']} ms ({figures['runs']} runs); p50 by phase (ms): {split}\n"
        )
    return out


def _statistics_lines(statistics: dict[str, Any]) -> str:
    def believed(facts: dict[str, Any] | None) -> str:
        value = (facts or {}).get("items_per_operation_estimate")
        return "no statistics" if value is None else f"{value:g} item(s) per operation"

    history = statistics.get("history_operations")
    mode = statistics["mode"] + (f" ({history:,} one-session operations first)" if history else "")
    start, end = statistics.get("at_start") or {}, statistics.get("at_end") or {}
    if start.get("vendor") != "postgresql":
        return f"\nPlanner statistics: {mode}.\n"
    analysed = end.get("last_autoanalyze") != start.get("last_autoanalyze")
    return (
        f"\nPlanner statistics: {mode}; the item table: {believed(start)} at the start, "
        f"{believed(end)} at the end"
        f"{' (autovacuum analysed it during the run)' if analysed else ''}; the bench "
        "itself never analyses it after the start.\n"
    )


def render_table(data: dict[str, Any]) -> str:
    """The terminal report: throughput table, pickup, latency, targets and notes."""
    out = io.StringIO()
    out.write(_heading(data))
    out.write(_throughput_table(data["throughput"]))
    out.write(_pickup_line(data["worker_pickup_ms"]))
    out.write(_latency_lines(data["latency"]))
    out.write(_statistics_lines(data["statistics"]))
    out.write(target_lines(data["targets"]))
    for note in data["notes"]:
        out.write(f"\nNote: {note}")
    out.write("\n")
    return out.getvalue()
