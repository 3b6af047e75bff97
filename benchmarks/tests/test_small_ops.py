"""bulkops_bench --small-ops: the in-process breakdown counts every statement of an
operation in exactly one phase and leaves the engine as it found it; the end-to-end
part's closed-loop clients are spread over ``--small-ops-servers`` servers (its
processes themselves are the benchmark's, not a test's)."""

import asyncio
import os
import shutil
import subprocess
import sys
import time

import pytest
from django.core.management import call_command

from benchmarks.management.commands import bulkops_bench
from benchmarks.processes import Processes, cpu_seconds
from benchmarks.small_ops import IN_PROCESS_PHASES, in_process_breakdown
from benchmarks.small_ops.end_to_end import Fleet, measure_throughput
from bulkops.engine import executor, operations
from bulkops.models import BulkOperation, Session

pytestmark = pytest.mark.django_db


def test_the_breakdown_runs_real_operations_and_attributes_every_statement(owner, make_session):
    originals = (operations.enqueue_operation, executor._start, executor._chunk)
    made = iter([make_session(owner).pk for _ in range(3)])

    result = in_process_breakdown(
        owner=owner, fresh=lambda n: [next(made) for _ in range(n)], runs=3
    )

    assert Session.objects.filter(status="closed").count() == 3  # the closes really ran
    assert BulkOperation.objects.filter(status="completed").count() == 3
    assert result["hooks_not_found"] == []  # the breakdown still covers this engine
    phases = result["phases"]
    assert set(IN_PROCESS_PHASES) <= set(phases)
    for name in ("create", "enqueue", "start", "chunk", "finalise"):
        assert phases[name]["queries"] > 0, name
    assert sum(p["queries"] for p in phases.values()) == pytest.approx(
        result["queries_per_operation"]
    )
    # The wrappers are gone again.
    assert (operations.enqueue_operation, executor._start, executor._chunk) == originals


class _FakeClient:
    """Answers each POST at once; records the batches it was given."""

    def __init__(self) -> None:
        self.posted: list[list[str]] = []

    async def one(self, ids):
        self.posted.append(ids)
        await asyncio.sleep(0)
        return 0.0, f"op-{ids[0]}", 0.001


def test_the_concurrent_clients_are_spread_over_the_servers_round_robin():
    servers = [_FakeClient(), _FakeClient()]
    batches = [[f"s-{n}"] for n in range(40)]

    result = asyncio.run(measure_throughput(servers, batches, 4))

    assert result["operations"] == 40
    assert sorted(b for s in servers for b in s.posted) == sorted(batches)
    # Four closed loops over two servers: two loops each, half the operations each.
    assert [len(s.posted) for s in servers] == [20, 20]


def test_small_ops_servers_reaches_the_bench(monkeypatch):
    seen = []

    class Bench:
        def __init__(self, options, *, step):
            seen.append(options)
            raise SystemExit(0)

    monkeypatch.setattr(bulkops_bench, "SmallOpsBench", Bench)
    with pytest.raises(SystemExit):
        call_command(bulkops_bench.Command(), "--small-ops", "--small-ops-servers", "2")
    with pytest.raises(SystemExit):
        call_command(bulkops_bench.Command(), "--small-ops")
    assert [o.servers for o in seen] == [2, 1]


def test_the_fleet_starts_each_server_on_its_own_port_and_the_first_takes_latency(monkeypatch):
    started = []

    def server(self, name, **kwargs):
        started.append(name)
        return f"http://127.0.0.1:{8000 + len(started)}"

    monkeypatch.setattr(Processes, "server", server)
    monkeypatch.setattr(Processes, "worker", lambda self, name, **kwargs: None)
    fleet = Fleet(1, servers=3)
    try:
        fleet.start()
    finally:
        fleet.stop()
    assert started == ["serve", "serve-1", "serve-2"]
    assert fleet.bases == [f"http://127.0.0.1:{p}" for p in (8001, 8002, 8003)]
    assert fleet.base == fleet.bases[0]


def test_the_fleet_runs_its_servers_and_workers_on_the_production_settings():
    fleet = Fleet(1)
    try:
        env = fleet.procs.env
        assert env["DEBUG"] == "0"
        assert len(env["SECRET_KEY"]) >= 40
        assert env["BULKOPS_RATE_LIMIT_CLOSE"] == Fleet.RATE_LIMIT
        assert "BULKOPS_BENCHMARKS" not in env  # the product alone
    finally:
        fleet.stop()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads Linux's /proc")
def test_the_servers_cpu_seconds_are_what_their_processes_used():
    # A stand-in server: 0.3 s of CPU, then it waits (for its stdin to close).
    code = "import sys, time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\nsys.stdin.read()"
    busy = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    fleet = Fleet(1)
    try:
        fleet.procs.running.append(("serve", busy))
        deadline = time.monotonic() + 30
        while (cpu_seconds(busy.pid) or 0) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        used = cpu_seconds(busy.pid)
        assert used >= 0.3
        assert fleet.server_cpu_seconds() == used
        fleet.procs.running.append(("serve-1", busy))  # two servers: the sum of both
        assert fleet.server_cpu_seconds() == 2 * used
        fleet.procs.running.append(("small-ops-0", busy))  # a worker: not a server
        assert fleet.server_cpu_seconds() == 2 * used
    finally:
        busy.communicate(b"")
        shutil.rmtree(fleet.workdir, ignore_errors=True)
    assert cpu_seconds(busy.pid) is None  # gone: nothing to read
