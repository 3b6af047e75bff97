"""bulkops_bench: a smoke run with tiny figures; the shape of its JSON, never its timings."""

import io
import json
import numbers

import pytest
from django.core.management import CommandError
from django.db import connection

from benchmarks.scenarios import SCENARIOS, BenchData
from bulkops.models import BulkOperation, BulkOperationItem, Session
from bulkops.tests.support.processes import using_postgres

# The worker runs on a thread of its own: it must see committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


def _positive(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0


def test_bench_smoke_run_writes_every_figure_as_json(bench, tmp_path):
    path = tmp_path / "bench.json"
    out = io.StringIO()
    bench(
        sessions=50,
        runs=1,
        batch_sizes="10",
        skip_latency=True,
        json_path=str(path),
        stdout=out,
        stderr=io.StringIO(),
    )
    data = json.loads(path.read_text())

    machine = data["machine"]
    assert _positive(machine["cpu_count"])
    assert machine["python"] and machine["django"] and machine["database"]
    assert data["options"]["sessions"] == 50

    rows = {r["action"]: r for r in data["throughput"]}
    assert set(rows) == set(SCENARIOS)
    for row in rows.values():
        assert row["batch"] == 10
        assert not row["cap_raised"]
        for kind in ("engine_processing", "engine_end_to_end", "naive", "raw"):
            assert len(row[kind]["runs"]) == 1
            assert _positive(row[kind]["median"]), (row["action"], kind)
        for ratio in row["ratios"].values():
            assert _positive(ratio)
        assert all(_positive(v) for v in row["worker_pickup_ms"])
    assert data["latency"] == {"status": "skipped", "reason": "--skip-latency"}
    assert {t["target"].split(" (")[0] for t in data["targets"]} >= {"close processing"}

    table = out.getvalue()
    assert "engine/naive" in table and "export JSON" in table
    # The benchmark owner and everything it ran are gone afterwards.
    assert not Session.objects.exists()
    assert not BulkOperation.objects.exists()


def test_bench_rejects_an_unknown_action(bench):
    with pytest.raises(CommandError, match="Unknown actions"):
        bench(actions="close,explode", skip_latency=True)


def test_production_statistics_write_small_operations_first_and_never_analyse_after(
    bench, tmp_path
):
    """--statistics production: one-session operations written and analysed before the
    cases, so the planner expects about one item per operation; from then on the bench
    analyses nothing (PostgreSQL counts every ANALYZE by hand)."""
    path = tmp_path / "bench.json"
    bench(
        sessions=30,
        runs=1,
        actions="close,soft_delete",
        batch_sizes="10",
        skip_latency=True,
        statistics="production",
        history_operations=300,
        json_path=str(path),
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    data = json.loads(path.read_text())

    assert data["options"]["statistics"] == "production"
    assert data["options"]["history_operations"] == 300
    statistics = data["statistics"]
    assert statistics["mode"] == "production" and statistics["history_operations"] == 300
    start, end = statistics["at_start"], statistics["at_end"]
    if start["vendor"] == "postgresql":
        assert start["items_per_operation_estimate"] == pytest.approx(1.0, abs=0.2)
        assert end["analyze_count"] == start["analyze_count"]
        for row in data["throughput"]:
            assert row["item_statistics"]["analyze_count"] == start["analyze_count"]
    assert {r["action"] for r in data["throughput"]} == {"close", "soft_delete"}
    # The history went with the benchmark owner.
    assert not BulkOperation.objects.exists()


def test_bench_refuses_a_history_of_nothing(bench):
    with pytest.raises(CommandError, match="--history-operations"):
        bench(statistics="production", history_operations=0, skip_latency=True)


def _pg_stat(sql: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


@pytest.mark.skipif(not using_postgres(), reason="CHECKPOINT and VACUUM are PostgreSQL's")
def test_every_timed_run_starts_after_a_checkpoint_and_cleanup_vacuums_the_history():
    """Each run's fresh rows are followed by a CHECKPOINT (the engine and its references
    start from the same buffer state), and the cleanup vacuums what the bench's own
    operations left (the next call does not start among their dead rows)."""
    checkpoints = "SELECT checkpoints_req FROM pg_stat_bgwriter"
    vacuums = (
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = "
        f"'{BulkOperationItem._meta.db_table}'"
    )
    data = BenchData(sessions=20)
    data.seed()
    before = _pg_stat(checkpoints)
    ids = data.fresh(SCENARIOS["close"], 10)
    assert len(ids) == 10 and _pg_stat(checkpoints) == before + 1

    vacuumed = _pg_stat(vacuums)
    data.cleanup()
    assert _pg_stat(vacuums) == vacuumed + 1
    assert not Session.objects.filter(pk__in=ids).exists()
