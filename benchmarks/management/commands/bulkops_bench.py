"""Measure the engine against a per-row baseline and the raw-SQL limit (docs/benchmarks.md)."""

import json
import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from benchmarks.large import (
    LARGE_SIZES,
    LargeBench,
    LargeWorkersBench,
    render_large,
    render_large_workers,
)
from benchmarks.load import LoadBench, LoadOptions, render_load
from benchmarks.processes import ProcessError
from benchmarks.report import machine_facts, render_table
from benchmarks.runner import Bench
from benchmarks.scenarios import DEFAULT_BATCH_SIZES, SCENARIOS, Options
from benchmarks.small_ops import SmallOpsBench, SmallOpsOptions, render_small_ops
from benchmarks.statistics import DEFAULT_HISTORY, STATISTICS
from benchmarks.tablesize import TABLE_SIZES, TableSizeBench, render_table_size

BAR_WIDTH = 30
MAX_LARGE_WORKERS = 8


def _csv_ints(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(v.replace("_", "")) for v in value.split(",") if v.strip())
    except ValueError:
        raise CommandError(f"Expected comma-separated numbers, got {value!r}.") from None
    if not numbers or any(n < 1 for n in numbers):
        raise CommandError(f"Expected positive numbers, got {value!r}.")
    return numbers


class Command(BaseCommand):
    help = (
        "Benchmark every bulk action through the real engine and worker against a naive "
        "per-row save() loop and the raw-SQL limit; optionally API → WebSocket latency."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--sessions", type=int, default=20_000, help="Sessions seeded (default 20,000)."
        )
        parser.add_argument("--runs", type=int, default=3, help="Runs per figure (median).")
        parser.add_argument(
            "--actions",
            default=",".join(SCENARIOS),
            help=f"Comma-separated, from: {', '.join(SCENARIOS)}.",
        )
        parser.add_argument(
            "--batch-sizes",
            default=",".join(str(b) for b in DEFAULT_BATCH_SIZES),
            help="Sessions per operation (default 100,1000,10000).",
        )
        parser.add_argument(
            "--no-raise-cap",
            action="store_true",
            help="Skip batches over BULKOPS_MAX_SESSIONS_PER_OPERATION instead of raising "
            "the cap for those runs.",
        )
        parser.add_argument(
            "--naive-max-rows",
            type=int,
            default=1000,
            help="Rows per naive (per-row save) run at most (default 1,000).",
        )
        parser.add_argument("--skip-latency", action="store_true", help="No API/WebSocket part.")
        parser.add_argument(
            "--latency-runs", type=int, default=20, help="Timed POSTs per size (default 20)."
        )
        parser.add_argument(
            "--worker",
            choices=["thread", "inline"],
            default="thread",
            help="thread: the worker polls on a thread as serve runs it (default); inline: "
            "the same worker runs right after each create (no pickup wait).",
        )
        parser.add_argument(
            "--statistics",
            choices=STATISTICS,
            default="as-found",
            help="The planner statistics the cases run under: as-found (this database's; "
            "the bench never analyses the item table) or production (many one-session "
            "operations written and analysed first, then the large ones).",
        )
        parser.add_argument(
            "--history-operations",
            type=int,
            default=DEFAULT_HISTORY,
            help=f"With --statistics production: one-session operations written first "
            f"(default {DEFAULT_HISTORY:,}).",
        )
        parser.add_argument("--json", dest="json_path", help="Write every figure to this file.")
        self.add_load_arguments(parser)
        self.add_table_size_arguments(parser)
        self.add_large_arguments(parser)
        self.add_small_ops_arguments(parser)
        parser.add_argument("--keep", action="store_true", help="Keep the owner and its rows.")

    def add_large_arguments(self, parser):
        group = parser.add_argument_group("large operations (--large)")
        group.add_argument(
            "--large",
            choices=list(LARGE_SIZES),
            help="Instead of the actions: seed this PostgreSQL database to that many sessions "
            "(once; kept) and time one large close (validate, create, run, raw UPDATE, stored "
            "data, undo) and a large export, in this process. Use a database of your own.",
        )
        group.add_argument(
            "--large-workers",
            type=int,
            default=0,
            help=f"With --large: instead, start daphne and N db_worker processes (1–"
            f"{MAX_LARGE_WORKERS}) and time over HTTP a close, an archive of 2 KB sessions "
            "(each with another user's list latency while it runs) and an export.",
        )

    def add_table_size_arguments(self, parser):
        group = parser.add_argument_group("table size (--table-size)")
        group.add_argument(
            "--table-size",
            choices=list(TABLE_SIZES),
            help="Instead of the actions: seed this database to that many sessions (once; "
            "kept) and time the list/search/info/validate/admin paths through a served "
            "daphne (p50/p90). Use a database of your own.",
        )
        group.add_argument(
            "--table-requests",
            type=int,
            default=30,
            help="With --table-size: timed requests per path (default 30).",
        )

    def add_small_ops_arguments(self, parser):
        small = parser.add_argument_group("many small operations")
        small.add_argument(
            "--small-ops",
            action="store_true",
            help="Run only the small-operation bench: ops/s and POST → completed latency "
            "through serve --no-worker and db_worker processes, and the engine's cost per "
            "operation phase by phase.",
        )
        small.add_argument("--small-ops-sizes", default="1,10,100", help="Sessions per operation.")
        small.add_argument("--small-ops-workers", default="1,2", help="db_worker counts.")
        small.add_argument(
            "--small-ops-operations", type=int, default=200, help="Operations per ops/s cell."
        )
        small.add_argument(
            "--small-ops-latency-runs", type=int, default=50, help="Sequential runs per cell."
        )
        small.add_argument(
            "--small-ops-servers",
            type=int,
            default=1,
            help="serve processes (each on its own port, the same settings) the concurrent "
            "clients are spread over, round-robin, as a proxy in front of several would.",
        )

    def add_load_arguments(self, parser):
        group = parser.add_argument_group("load (--load)")
        group.add_argument(
            "--load",
            action="store_true",
            help="Instead: N API clients and M WebSocket subscribers against 2 daphne + 2 "
            "db_worker on PostgreSQL + Redis (a database of its own; docs/benchmarks.md).",
        )
        group.add_argument("--clients", type=int, default=50, help="API clients (default 50).")
        group.add_argument(
            "--subscribers", type=int, default=200, help="WebSocket subscribers (default 200)."
        )
        group.add_argument(
            "--duration", type=float, default=60.0, help="Seconds of traffic (default 60)."
        )

    def handle_load(self, opts) -> None:
        if (
            not 1 <= opts["clients"] <= 500
            or not 0 <= opts["subscribers"] <= 2000
            or not 0 < opts["duration"] <= 3600
        ):
            raise CommandError(
                "Bounds: --clients 1–500, --subscribers 0–2000, --duration 0–3600 s."
            )
        options = LoadOptions(
            clients=opts["clients"], subscribers=opts["subscribers"], duration=opts["duration"]
        )
        try:
            data = LoadBench(options, progress=lambda msg: self.stderr.write(msg)).run()
        except KeyboardInterrupt:
            raise CommandError(
                "Interrupted: its servers and workers were stopped and its database dropped."
            ) from None
        self.write_report(render_load(data), data, opts["json_path"])

    def write_report(self, text: str, data: dict, json_path: str | None) -> None:
        self.stdout.write(text)
        if json_path:
            path = Path(json_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
            self.stdout.write(f"Figures written to {path}")

    def handle(self, *args, **opts):
        if opts["load"]:
            return self.handle_load(opts)
        if opts.get("large"):
            self.large(opts)
            return
        if opts.get("large_workers"):
            raise CommandError("--large-workers goes with --large 100k|1m|10m.")
        if opts.get("table_size"):
            self.table_size(opts)
            return
        if opts["small_ops"]:
            self.small_ops(opts)
            return
        actions = tuple(a.strip() for a in opts["actions"].split(",") if a.strip())
        unknown = [a for a in actions if a not in SCENARIOS]
        if unknown or not actions:
            raise CommandError(f"Unknown actions {unknown}; choose from: {', '.join(SCENARIOS)}.")
        if opts["sessions"] < 1 or opts["runs"] < 1 or opts["latency_runs"] < 1:
            raise CommandError("--sessions, --runs and --latency-runs must be at least 1.")
        if not 1 <= opts["history_operations"] <= 10_000_000:
            raise CommandError("--history-operations must be between 1 and 10,000,000.")
        options = Options(
            sessions=opts["sessions"],
            runs=opts["runs"],
            actions=actions,
            batch_sizes=_csv_ints(opts["batch_sizes"]),
            raise_cap=not opts["no_raise_cap"],
            naive_max_rows=max(1, opts["naive_max_rows"]),
            latency=not opts["skip_latency"],
            latency_runs=opts["latency_runs"],
            keep=opts["keep"],
            worker=opts["worker"],
            statistics=opts["statistics"],
            history=opts["history_operations"],
        )
        self._started = time.monotonic()
        data = Bench(options, progress=self.draw).run()
        self.stderr.write("")
        self.write_report(render_table(data), data, opts["json_path"])

    def large(self, opts) -> None:
        size, workers = LARGE_SIZES[opts["large"]], opts.get("large_workers") or 0
        if not 0 <= workers <= MAX_LARGE_WORKERS:
            raise CommandError(f"--large-workers: 1–{MAX_LARGE_WORKERS} (0: in this process).")
        progress = self.stderr.write
        render = render_large_workers if workers else render_large
        bench = (
            LargeWorkersBench(size=size, workers=workers, progress=progress)
            if workers
            else LargeBench(size=size, progress=progress)
        )
        try:
            data = bench.run()
        except KeyboardInterrupt:
            if not workers:
                raise
            raise CommandError(
                "Interrupted: its operations were cancelled, its processes stopped and the "
                "table put back as seeded."
            ) from None
        except (RuntimeError, ProcessError) as exc:
            raise CommandError(str(exc)) from None
        self.write_report(render(data), data, opts.get("json_path"))

    def table_size(self, opts) -> None:
        bench = TableSizeBench(
            size=TABLE_SIZES[opts["table_size"]],
            requests=max(1, opts["table_requests"]),
            progress=lambda message: self.stderr.write(message),
        )
        data = bench.run()
        self.write_report(render_table_size(data), data, opts.get("json_path"))

    def small_ops(self, opts) -> None:
        options = SmallOpsOptions(
            sizes=_csv_ints(opts["small_ops_sizes"]),
            workers=_csv_ints(opts["small_ops_workers"]),
            operations=max(1, opts["small_ops_operations"]),
            latency_runs=max(1, opts["small_ops_latency_runs"]),
            servers=max(1, opts["small_ops_servers"]),
        )
        bench = SmallOpsBench(options, step=lambda label: None)
        total, done = bench.steps(), [0]

        def step(label: str) -> None:
            done[0] += 1
            self.draw(f"{done[0]}/{total}|{label}")

        bench.step = step
        self._started = time.monotonic()
        section = {"machine": machine_facts(), "small_ops": bench.run()}
        self.stderr.write("")
        self.write_report(render_small_ops(section["small_ops"]), section, opts["json_path"])

    def draw(self, message: str) -> None:
        counts, _, label = message.partition("|")
        done, total = (int(x) for x in counts.split("/"))
        filled = int(done / max(total, 1) * BAR_WIDTH)
        elapsed = time.monotonic() - self._started
        self.stderr.write(
            f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} "
            f"{elapsed:6.1f}s  {label[:60]:<60}",
            ending="",
        )
        sys.stderr.flush()
