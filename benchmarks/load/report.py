"""The load run's report: requests by endpoint, operations, WebSocket events, CPU, the
machine, the correctness checks, and the terminal text."""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from benchmarks.load.clients import BURST_EVERY, BURST_MIX, FINAL_EVENTS, MIX, Subscriber, User
from benchmarks.processes import redis_url
from benchmarks.report import percentile, rounded

if TYPE_CHECKING:
    from benchmarks.load.workload import LoadBench
    from benchmarks.load.world import LoadWorld

ACTIVE_STATUSES = ("pending", "running", "paused")


def build_load_report(
    bench: LoadBench, world: LoadWorld, users: list[User], load_before: list[float]
) -> dict[str, Any]:
    """Every figure of one load run, as written to ``--json``, with its checks."""
    operations = operations_in(world)
    traffic = bench.timings.get("traffic_seconds") or bench.options.duration
    total = sum(len(v) for v in bench.stats.latencies.values())
    statuses = Counter()
    for counts in bench.stats.statuses.values():
        statuses.update(counts)
    requests_part = {
        "total": total,
        "per_second": round(total / traffic, 1),
        "by_status": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": sum(v for k, v in statuses.items() if k >= 500),
        "rate_limited": statuses.get(429, 0),
        "rate_limited_without_retry_after": bench.stats.missing_retry_after,
        "transport_errors": dict(bench.stats.transport_errors),
        "idempotent_replays": bench.stats.replays,
        "idempotent_replays_mismatched": bench.stats.replays_mismatched,
    }
    report = {
        "scenario": "load",
        "command": "manage.py bulkops_bench " + " ".join(sys.argv[2:]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": _machine(world, load_before),
        "options": _options(bench, users),
        "timings_seconds": {k: round(v, 1) for k, v in bench.timings.items()},
        "requests": requests_part,
        "endpoints": _endpoints(bench, traffic),
        "operations": _operations_part(bench, operations),
        "websocket": _websocket_part(bench, operations),
        "cpu_seconds_during_traffic": bench.cpu,
        "server_tracebacks": world.server_errors_logged(),
        "notes": bench.notes,
    }
    report["checks"] = _checks(report)
    return report


def _options(bench: LoadBench, users: list[User]) -> dict[str, Any]:
    return {
        "clients": bench.options.clients,
        "subscribers": bench.options.subscribers,
        "duration_seconds": bench.options.duration,
        "users": len(users),
        "sessions_per_user": bench.options.sessions_per_user,
        "servers": bench.options.servers,
        "workers": bench.options.workers,
        "mix_weights": dict(MIX),
        "burst_clients": len(range(0, bench.options.clients, BURST_EVERY)),
        "burst_mix_weights": dict(BURST_MIX),
        "layout": "daphne × servers, db_worker --interval 0.1 × workers, PostgreSQL + "
        "Redis, DEBUG=0 on plain HTTP; default rate limits and caps",
    }


def _endpoints(bench: LoadBench, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for endpoint in sorted(bench.stats.latencies):
        samples = bench.stats.latencies[endpoint]
        rows.append(
            {
                "endpoint": endpoint,
                "requests": len(samples),
                "per_second": round(len(samples) / seconds, 1),
                "p50_ms": rounded(percentile(samples, 50)),
                "p99_ms": rounded(percentile(samples, 99)),
                "max_ms": rounded(max(samples)),
                "statuses": {str(k): v for k, v in sorted(bench.stats.statuses[endpoint].items())},
            }
        )
    return rows


def _operations_part(bench: LoadBench, operations: dict[str, tuple[int, str]]) -> dict[str, Any]:
    by_status = Counter(status for _, status in operations.values())
    return {
        "created": len(operations),
        "finished": sum(v for k, v in by_status.items() if k not in ACTIVE_STATUSES),
        "by_status": dict(sorted(by_status.items())),
        "accepted_by_api": len(bench.stats.accepted),
        "accepted_not_in_database": len(bench.stats.accepted - set(operations)),
        "in_database_not_accepted": len(set(operations) - bench.stats.accepted),
    }


def _websocket_part(bench: LoadBench, operations: dict[str, tuple[int, str]]) -> dict[str, Any]:
    expected = sum(len(_expected(s, operations)) for s in bench.subscribers)
    lost = sum(len(missing_finals(s, operations)) for s in bench.subscribers)
    wrong = sum(
        1
        for s in bench.subscribers
        for op, kind in s.finals.items()
        if op in operations and operations[op][1] not in FINAL_EVENTS[kind]
    )
    foreign = sum(
        1
        for s in bench.subscribers
        for op in s.seen
        if operations.get(op, (None,))[0] != s.user.user_id
    )
    return {
        "subscribers": len(bench.subscribers),
        "per_user": math.ceil(len(bench.subscribers) / max(1, bench.options.user_count())),
        "events_received": sum(sum(s.events.values()) for s in bench.subscribers),
        "events_by_type": dict(sum((s.events for s in bench.subscribers), Counter())),
        "final_events_expected": expected,
        "final_events_received": expected - lost,
        "events_lost": lost,
        "final_event_status_mismatches": wrong,
        "foreign_operations_seen": foreign,
        "closed_early": sum(1 for s in bench.subscribers if s.closed is not None),
    }


def operations_in(world: LoadWorld) -> dict[str, tuple[int, str]]:
    """Every operation in the database: id → (user id, status)."""
    rows = world.query("SELECT id, user_id, status FROM bulkops_bulkoperation")
    return {op: (user_id, status) for op, user_id, status in rows}


def _expected(sub: Subscriber, operations: dict[str, tuple[int, str]]) -> set[str]:
    return {
        op
        for op, (user_id, status) in operations.items()
        if user_id == sub.user.user_id and status not in ACTIVE_STATUSES
    }


def missing_finals(sub: Subscriber, operations: dict[str, tuple[int, str]]) -> set[str]:
    return _expected(sub, operations) - set(sub.finals)


def _checks(report: dict[str, Any]) -> dict[str, bool]:
    req, ops, ws = report["requests"], report["operations"], report["websocket"]
    return {
        "no_server_errors": req["server_errors"] == 0 and not req["transport_errors"],
        "retry_after_on_every_429": req["rate_limited_without_retry_after"] == 0,
        "no_events_lost": ws["events_lost"] == 0 and ws["final_event_status_mismatches"] == 0,
        "no_foreign_events": ws["foreign_operations_seen"] == 0,
        "every_operation_finished": ops["finished"] == ops["created"],
        "operations_match_api": ops["accepted_not_in_database"] == 0
        and ops["in_database_not_accepted"] == 0,
        "idempotent_replays_same_operation": req["idempotent_replays_mismatched"] == 0,
    }


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _machine(world: LoadWorld, load_before: list[float]) -> dict[str, Any]:
    import aiohttp
    import channels
    import daphne
    import django
    import redis

    client = redis.Redis.from_url(redis_url(), socket_timeout=5)
    try:
        redis_version = client.info("server")["redis_version"]
    finally:
        client.close()
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "daphne": daphne.__version__,
        "channels": channels.__version__,
        "http_client": f"aiohttp {aiohttp.__version__}",
        "database": f"PostgreSQL {world.query('SHOW server_version')[0][0]}",
        "redis": f"Redis {redis_version}",
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def render_load(report: dict[str, Any]) -> str:
    opts, req, ops, ws = (
        report["options"],
        report["requests"],
        report["operations"],
        report["websocket"],
    )
    m = report["machine"]
    out = [
        f"Load: {opts['clients']} API clients + {ws['subscribers']} WebSocket subscribers "
        f"({opts['users']} users) for {opts['duration_seconds']:g} s against "
        f"{opts['servers']} daphne + {opts['workers']} db_worker",
        f"{m['cpu_count']} CPUs, {m['database']}, {m['redis']}, Python {m['python']}, "
        f"Django {m['django']}; load average before {m['load_average_before']}, after "
        f"{m['load_average_after']}",
        "",
        f"{'endpoint':<16}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}  statuses",
    ]
    for row in report["endpoints"]:
        out.append(
            f"{row['endpoint']:<16}{row['requests']:>10,}{row['per_second']:>9}"
            f"{row['p50_ms']:>9}{row['p99_ms']:>9}  {row['statuses']}"
        )
    out += [
        "",
        f"Requests: {req['total']:,} ({req['per_second']}/s); 5xx: {req['server_errors']}; "
        f"429: {req['rate_limited']} "
        f"(without Retry-After: {req['rate_limited_without_retry_after']}); "
        f"transport errors: {req['transport_errors'] or 0}",
        f"Operations: {ops['created']} created, {ops['finished']} finished {ops['by_status']}; "
        f"accepted by the API {ops['accepted_by_api']}",
        f"WebSocket: {ws['events_received']:,} events; final events {ws['final_events_received']}"
        f"/{ws['final_events_expected']}, lost {ws['events_lost']}; "
        f"closed early {ws['closed_early']}",
        "Checks: "
        + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in report["checks"].items()),
    ]
    cpu = report.get("cpu_seconds_during_traffic") or {}
    if cpu:
        out.append(
            "CPU seconds during the traffic: " + ", ".join(f"{k} {v}" for k, v in cpu.items())
        )
    out += [f"Note: {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"
