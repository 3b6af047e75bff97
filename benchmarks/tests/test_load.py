"""bulkops_bench --load, tiny: real daphne and db_worker processes on PostgreSQL + Redis.

The shape of the report and its correctness figures (no 5xx, no lost final event, a
Retry-After on every 429, the database agreeing with the report) — never its timings.
"""

import io
import json

import psycopg
import pytest
import redis
from django.core.management import CommandError

from benchmarks.load import workload
from benchmarks.processes import (
    postgres_admin_url,
    postgres_available,
    redis_available,
    redis_url,
)
from bulkops.tests.support.helpers import require

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.processes]


def _load_databases() -> set[str]:
    with psycopg.connect(postgres_admin_url(), autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bulkops_load_%'")
        return {name for (name,) in rows}


@pytest.fixture
def services():
    require(postgres_available(), "PostgreSQL")
    require(redis_available(), "Redis")


def test_load_run_loses_no_event_and_answers_no_5xx(bench, services, tmp_path):
    before = _load_databases()
    path = tmp_path / "load.json"
    out = io.StringIO()
    bench(
        load=True,
        clients=4,
        subscribers=6,
        duration=5,
        json_path=str(path),
        stdout=out,
        stderr=io.StringIO(),
    )
    data = json.loads(path.read_text())

    assert data["scenario"] == "load"
    assert (
        data["options"] | {"clients": 4, "subscribers": 6, "servers": 2, "workers": 2}
        == (data["options"])
    )
    assert data["machine"]["database"].startswith("PostgreSQL")
    assert data["machine"]["redis"].startswith("Redis")

    requests = data["requests"]
    assert requests["total"] == sum(row["requests"] for row in data["endpoints"]) > 0
    assert requests["server_errors"] == 0
    assert requests["transport_errors"] == {}
    assert requests["rate_limited_without_retry_after"] == 0
    endpoints = {row["endpoint"]: row for row in data["endpoints"]}
    assert {"POST validate", "GET sessions"} <= set(endpoints)
    for row in endpoints.values():
        assert row["requests"] == sum(row["statuses"].values())
        assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]

    operations = data["operations"]
    assert operations["created"] == operations["finished"] == operations["accepted_by_api"] > 0
    assert operations["accepted_not_in_database"] == operations["in_database_not_accepted"] == 0
    assert sum(operations["by_status"].values()) == operations["created"]

    ws = data["websocket"]
    assert ws["subscribers"] == 6
    assert ws["events_lost"] == 0
    assert ws["final_events_received"] == ws["final_events_expected"] > 0
    assert ws["foreign_operations_seen"] == 0
    assert ws["closed_early"] == 0

    assert all(data["checks"].values()), data["checks"]
    assert "POST validate" in out.getvalue()
    # Its database is gone afterwards.
    assert _load_databases() == before


def test_load_run_interrupted_kills_its_processes_and_drops_its_database(
    bench, services, monkeypatch
):
    """Ctrl-C or SIGTERM during the traffic (here: the flag their handler sets, set as the
    traffic starts) ends every loop, then everything is torn down."""
    before = _load_databases()
    seen = {}
    traffic = workload.LoadBench._traffic

    async def interrupted(self, world, users):
        seen["processes"] = [proc for _, proc in world.processes]
        seen["prefix"] = world.prefix
        assert all(proc.poll() is None for proc in seen["processes"])
        assert _load_databases() - before == {world.name}
        self.stopped.set()
        await traffic(self, world, users)

    monkeypatch.setattr(workload.LoadBench, "_traffic", interrupted)
    with pytest.raises(CommandError, match="Interrupted"):
        bench(load=True, clients=2, subscribers=2, duration=600, stderr=io.StringIO())
    assert len(seen["processes"]) == 4  # 2 daphne + 2 db_worker
    assert all(proc.poll() is not None for proc in seen["processes"])
    assert _load_databases() == before
    client = redis.Redis.from_url(redis_url())
    assert not list(client.scan_iter(match=f"*{seen['prefix']}*"))
    client.close()


@pytest.mark.parametrize(
    "bounds", [{"clients": 0}, {"clients": 501}, {"subscribers": 2001}, {"duration": 0}]
)
def test_load_run_is_bounded(bench, bounds):
    before = _load_databases() if postgres_available() else set()
    with pytest.raises(CommandError, match="Bounds"):
        bench(load=True, **bounds)
    assert (_load_databases() if postgres_available() else set()) == before
