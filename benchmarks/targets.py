"""What the figures are held to (set for PostgreSQL on 2 cores), evaluated from a
report's data: each target is met, missed, or n/a when its figure was not measured."""

from __future__ import annotations

from typing import Any

from benchmarks.scenarios import SCENARIOS

#: Processing floors (rows/s) at the largest batch run.
PROCESSING_FLOORS = (
    ("close", 50_000),
    ("soft_delete", 50_000),
    ("archive", 10_000),
    ("export_csv", 50_000),
    ("export_json", 50_000),
)
#: Actions that must stay within 3× of raw SQL.
WITHIN_RAW = ("close", "soft_delete")
#: With production-like statistics: (batch, engine/naive floor or 0, engine/raw floor, goal).
PRODUCTION_WRITE_PATH = (
    (1000, 30, 1 / 1.5, "raw SQL <= 1.5x faster (engine/raw >= 0.667)"),
    (10_000, 0, 0.8, "engine/raw >= 0.8"),
)


def _largest(throughput: list[dict[str, Any]], action: str) -> dict[str, Any] | None:
    rows = [r for r in throughput if r["action"] == action]
    return max(rows, key=lambda r: r["batch"]) if rows else None


def _target(name: str, goal: str, value: float | None, met: bool | None) -> dict[str, Any]:
    return {"target": name, "goal": goal, "value": value, "met": met}


def _at_least(name: str, goal: str, value: float | None, floor: float) -> dict[str, Any]:
    return _target(name, goal, value, None if value is None else value >= floor)


def _processing_targets(throughput: list[dict[str, Any]]) -> list[dict[str, Any]]:
    targets = []
    for action, floor in PROCESSING_FLOORS:
        row = _largest(throughput, action)
        if row is None:
            continue
        batch = f"batch {row['batch']:,}"
        rate = row["engine_processing"]["median"]
        targets.append(
            _at_least(f"{row['label']} processing ({batch})", f">= {floor:,}/s", rate, floor)
        )
        if action in WITHIN_RAW:
            ratio = row["ratios"]["engine_vs_raw"]
            targets.append(
                _at_least(
                    f"{row['label']} within 3x of raw SQL ({batch})",
                    "engine/raw >= 0.333",
                    ratio,
                    1 / 3,
                )
            )
    return targets


def _naive_targets(throughput: list[dict[str, Any]]) -> list[dict[str, Any]]:
    targets = []
    for action in SCENARIOS:
        row = _largest(throughput, action)
        if row is None:
            continue
        ratio = row["ratios"]["engine_vs_naive"]
        targets.append(
            _at_least(
                f"{row['label']} vs naive (batch {row['batch']:,})",
                "engine/naive >= 30",
                ratio,
                30,
            )
        )
    return targets


def _at_batch(throughput: list[dict[str, Any]], action: str, batch: int) -> dict | None:
    return next((r for r in throughput if r["action"] == action and r["batch"] == batch), None)


def _production_targets(throughput: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The write path measured as production runs: at 1,000 sessions ≥ 30× the per-row
    loop and raw SQL at most 1.5× faster; at 10,000 at least 0.8× raw SQL."""
    targets = []
    for action in WITHIN_RAW:
        for batch, naive_floor, raw_floor, raw_goal in PRODUCTION_WRITE_PATH:
            row = _at_batch(throughput, action, batch)
            if row is None:
                continue
            where = f"{row['label']}, {batch:,}, production-like statistics"
            ratios = row["ratios"]
            if naive_floor:
                targets.append(
                    _at_least(
                        f"{where}: vs per-row save()",
                        f"engine/naive >= {naive_floor}",
                        ratios["engine_vs_naive"],
                        naive_floor,
                    )
                )
            targets.append(
                _at_least(f"{where}: vs raw SQL", raw_goal, ratios["engine_vs_raw"], raw_floor)
            )
    return targets


def evaluate_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets set for PostgreSQL on 2 cores: processing floors, within 3× of raw
    SQL and 30× the per-row loop, each at the largest batch run; the latency of a
    1,000-session close; and with production-like statistics the write path at 1,000
    and 10,000 sessions."""
    throughput = data["throughput"]
    targets = _processing_targets(throughput) + _naive_targets(throughput)
    if data["options"].get("statistics") == "production":
        targets += _production_targets(throughput)
    latency = data["latency"].get("sizes", {}).get("1000")
    if latency:
        p50 = latency["p50_ms"]
        targets.append(
            _target("POST → completed event, 1,000 sessions, p50", "<= 150 ms", p50, p50 <= 150)
        )
    return targets


def small_ops_targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    """One-session operations with one worker: at least 100 a second, and POST →
    ``bulk_operation_completed`` p50 at most 30 ms."""
    cell = next(
        (c for c in section["end_to_end"] if c["workers"] == 1 and c["sessions"] == 1), None
    )
    if cell is None:
        return []
    rate, p50 = cell["operations_per_second"], cell["latency"]["p50_ms"]
    servers = cell.get("servers", 1)
    fleet = "1 worker" if servers == 1 else f"1 worker, {servers} servers"
    return [
        _at_least(f"one-session operations per second, {fleet}", ">= 100/s", rate, 100),
        _target("one-session POST → completed event, p50", "<= 30 ms", p50, p50 <= 30),
    ]


def target_lines(targets: list[dict[str, Any]]) -> str:
    """The targets as text: met, MISSED or n/a, the value and the goal."""
    if not targets:
        return ""
    out = "\nTargets (set for PostgreSQL on 2 cores):\n"
    for t in targets:
        mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        value = t["value"]
        shown = "—" if value is None else (f"{value:,.3g}" if value < 100 else f"{value:,.0f}")
        out += f"  [{mark:>6}] {t['target']}: {shown} (goal {t['goal']})\n"
    return out


def _at_most(name: str, goal: str, value: float | None, ceiling: float) -> dict[str, Any]:
    return _target(name, goal, value, None if value is None else value <= ceiling)


def large_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Large operations with worker processes (set at 1 M sessions and 2 workers): close
    ≥ 0.7× one raw ``UPDATE``, archive of 2 KB sessions ≥ 15,000/s, the bystander's list
    p99 ≤ 250 ms while each runs, every create ≤ 300 ms, validate ≤ 2 s and ≤ 50 KB,
    export ≥ 100,000 rows/s."""
    close, archive = data["close"], data["archive"]
    targets = [_at_least("close vs raw UPDATE (run)", ">= 0.7x", data["close_vs_raw"], 0.7)]
    targets.append(
        _at_least("archive (2 KB), run", ">= 15,000/s", archive["sessions_per_second"], 15_000)
    )
    for name, run in (("close", close), ("archive", archive)):
        p99 = run["bystander"]["p99_ms"]
        targets.append(_at_most(f"bystander's list p99 during the {name}", "<= 250 ms", p99, 250))
    for name, run in (("close, no token", close), ("archive, with token", archive)):
        ms = run["create_seconds"] * 1000
        targets.append(_at_most(f"create POST ({name})", "<= 300 ms", ms, 300))
    for name, validate in (("close", data["validate"]), ("archive", archive["validate"])):
        targets.append(_at_most(f"validate {name}: time", "<= 2 s", validate["seconds"], 2))
        kb = validate["bytes"] / 1000
        targets.append(_at_most(f"validate {name}: answer", "<= 50 KB", kb, 50))
    rate = data["export"]["sessions_per_second"]
    targets.append(_at_least("export CSV gzip, run", ">= 100,000 rows/s", rate, 100_000))
    return targets
