"""The text of ``--large … --large-workers N``: every figure on a line, then the issue's
targets (set at 1 M sessions and 2 workers; at another size they are indicative)."""

from __future__ import annotations

from typing import Any

from benchmarks.targets import large_targets, target_lines


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}/s"


def _bystander(seen: dict[str, Any]) -> str:
    failed = seen["requests"] - seen["statuses"].get("200", 0)
    return (
        f"p50 {seen['p50_ms']} / p95 {seen['p95_ms']} / p99 {seen['p99_ms']} / "
        f"max {seen['max_ms']} ms, {seen['requests']} requests ({failed} not 200)"
    )


def _run(run: dict[str, Any]) -> str:
    return (
        f"{run['seconds']} s, {_rate(run['sessions_per_second'])}; created → finished "
        f"{run['end_to_end_seconds']} s, {_rate(run['end_to_end_sessions_per_second'])} "
        f"({run['status']}, {run['sessions']:,} sessions)"
    )


def _validate(validate: dict[str, Any]) -> str:
    return (
        f"{validate['seconds']} s, {validate['bytes'] / 1000:.1f} KB "
        f"({validate['eligible']:,} eligible)"
    )


def render_large_workers(data: dict[str, Any]) -> str:
    close, archive, export, raw = data["close"], data["archive"], data["export"], data["raw_update"]
    workers = f"{data['workers']} worker(s)"
    load = data["load_average"]
    rows = [
        ("sessions in the table", f"{data['sessions']:,}"),
        ("load average (1, 5, 15 min)", f"{load['start']} at the start, {load['end']} at the end"),
        (
            f"bystander alone ({data['bystander_sessions']} sessions)",
            _bystander(data["bystander_idle"]),
        ),
        ("validate close status=active (HTTP)", _validate(data["validate"])),
        ("raw UPDATE (rolled back)", f"{raw['seconds']} s, {_rate(raw['rows_per_second'])}"),
        ("create close (POST, no token)", f"{close['create_seconds']} s"),
        (f"close, {workers}", _run(close)),
        (
            "close vs raw UPDATE",
            f"{data['close_vs_raw']:.2f}× (run), {data['close_vs_raw_end_to_end']:.2f}× "
            "(created → finished)",
        ),
        ("  bystander during the close", _bystander(close["bystander"])),
        ("  load average after the close", str(close["load_average"])),
        (
            "archive filter",
            f"created_before {archive['filter']['created_before'][:19]}, status=active: "
            f"{archive['sessions_given_content']:,} sessions of {archive['content_bytes']:,} B",
        ),
        ("validate archive (HTTP)", _validate(archive["validate"])),
        ("create archive (POST, with token)", f"{archive['create_seconds']} s"),
        (f"archive, {workers}", _run(archive)),
        ("  bystander during the archive", _bystander(archive["bystander"])),
        ("  load average after the archive", str(archive["load_average"])),
        (
            "export CSV gzip, every live session",
            f"{_run(export)}; {export['file_mb']} MB, {export['file_lines']:,} lines",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    text = "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
    return text + "\n" + target_lines(large_targets(data))
