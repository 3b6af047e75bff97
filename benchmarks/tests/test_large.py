"""bulkops_bench --large: smoke runs at a small size on PostgreSQL, in this process and
with daphne and db_worker processes; the shape of their figures, that every operation
did what it says and that the table ends as it began — never their timings."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError
from django.db import connection

from benchmarks.large import (
    LargeBench,
    LargeWorkersBench,
    render_large,
    render_large_workers,
    workers,
)
from benchmarks.large.table import BYSTANDER_USER, ensure_table
from bulkops.models import ACTIVE_OPERATION_STATUSES, BulkOperation, Session
from bulkops.tests.support.processes import using_postgres

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.postgres
@pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL")
def test_a_small_large_bench_measures_every_figure_and_undoes_its_close(settings, tmp_path):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 100
    settings.BULKOPS_MAX_EXPORT_SESSIONS = 100
    settings.BULKOPS_EXPORT_DIR = tmp_path
    data = LargeBench(size=3000, progress=lambda message: None).run()
    active = Session.objects.filter(status="active", deleted_at__isnull=True).count()
    assert data["sessions"] == 3000
    assert data["validate"]["eligible"] == data["close"]["sessions"] == active > 100
    assert data["raw_update"]["rows"] == active
    assert data["close"]["status"] == data["undo"]["status"] == "completed"
    assert data["export"]["status"] == "completed"
    assert data["export"]["sessions"] == Session.objects.filter(deleted_at__isnull=True).count()
    assert data["stored_mb_per_million"] > 0
    assert set(BulkOperation.objects.values_list("action", flat=True)) == {
        "close", "undo", "export"
    }  # fmt: skip
    assert not list(tmp_path.iterdir())  # the export's file is removed
    assert "close vs raw UPDATE" in render_large(data)


@pytest.mark.skipif(using_postgres(), reason="the SQLite refusal")
@pytest.mark.parametrize("workers", [0, 2])
def test_on_sqlite_it_is_refused(bench, workers):
    with pytest.raises(CommandError, match="needs PostgreSQL"):
        bench(large="100k", large_workers=workers, stdout=io.StringIO(), stderr=io.StringIO())


# --- with worker processes (--large-workers) ---------------------------------------------------
def _table() -> list[tuple]:
    """The table as the seed made it: rows by status and liveness, blobs, contents."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, deleted_at IS NULL, count(*), count(archive_blob), "
            "count(*) FILTER (WHERE status <> 'archived' AND content <> 'Notes on ' || title) "
            "FROM bulkops_session GROUP BY 1, 2 ORDER BY 1, 2"
        )
        return cursor.fetchall()


@pytest.fixture
def fleet_bench(settings, monkeypatch):
    """A 3,000-session table past caps of 100, the bystander's baseline shortened."""
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 100
    settings.BULKOPS_MAX_EXPORT_SESSIONS = 100
    monkeypatch.setattr(workers, "IDLE_SECONDS", 0.3)
    ensure_table(3000, lambda message: None)
    return LargeWorkersBench(size=3000, workers=2, progress=lambda m: None, bystander_sessions=30)


@pytest.mark.postgres
@pytest.mark.processes
@pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL")
def test_with_worker_processes_it_runs_every_operation_and_puts_the_table_back(fleet_bench):
    before = _table()
    active = Session.objects.filter(status="active", deleted_at__isnull=True).count()
    live = Session.objects.filter(deleted_at__isnull=True).count()

    data = fleet_bench.run()

    close, archive, export = data["close"], data["archive"], data["export"]
    assert data["validate"]["eligible"] == close["sessions"] == close["succeeded"] == active
    assert data["raw_update"]["rows"] == active
    assert archive["sessions_given_content"] == archive["validate"]["eligible"]
    assert archive["sessions"] == archive["succeeded"] == archive["validate"]["eligible"] > 100
    assert export["sessions"] == live + 30  # the bystander's sessions too
    assert export["file_lines"] == export["sessions"] + 1  # the header
    ops = BulkOperation.objects.filter(
        pk__in=[close["operation_id"], archive["operation_id"], export["operation_id"]]
    )
    assert sorted(ops.values_list("action", "status")) == [
        ("archive", "completed"), ("close", "completed"), ("export", "completed")
    ]  # fmt: skip
    for seen in (data["bystander_idle"], close["bystander"], archive["bystander"]):
        assert seen["requests"] >= 1
        assert seen["statuses"] == {"200": seen["requests"]}
        assert seen["counts_seen"] == [30]  # its own sessions, never the staff's
    assert _table() == before  # closed, archived and 2 KB contents put back
    assert not get_user_model().objects.filter(username=BYSTANDER_USER).exists()
    assert all(proc.poll() is not None for proc in fleet_bench.fleet.started)
    assert len(fleet_bench.fleet.started) == 3  # daphne and 2 db_worker
    assert not fleet_bench.fleet.exports.exists()
    text = render_large_workers(data)
    assert "bystander during the close" in text and "close vs raw UPDATE" in text


@pytest.mark.postgres
@pytest.mark.processes
@pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL")
def test_with_worker_processes_an_interrupt_stops_everything_and_puts_the_table_back(
    fleet_bench, monkeypatch
):
    """Ctrl-C (or SIGTERM, which the bench turns into one) while the close runs."""
    before = _table()

    def interrupted(self, operation_id):
        assert all(proc.poll() is None for proc in self.fleet.started)
        raise KeyboardInterrupt

    monkeypatch.setattr(LargeWorkersBench, "_wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fleet_bench.run()

    assert BulkOperation.objects.filter(action="close").count() == 1
    assert not BulkOperation.objects.filter(status__in=ACTIVE_OPERATION_STATUSES).exists()
    assert all(proc.poll() is not None for proc in fleet_bench.fleet.started)
    assert _table() == before
    assert not get_user_model().objects.filter(username=BYSTANDER_USER).exists()


@pytest.mark.postgres
@pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL")
def test_with_worker_processes_a_table_with_other_sessions_is_refused(
    fleet_bench, owner, make_session
):
    """It puts back only what it knows the seed's shape of."""
    session = make_session(owner)
    with pytest.raises(RuntimeError, match="database of its own"):
        fleet_bench.run()
    assert fleet_bench.fleet is None  # nothing started
    assert Session.objects.get(pk=session.pk).status == "active"
    assert not get_user_model().objects.filter(username=BYSTANDER_USER).exists()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"large": "100k", "large_workers": 9}, "--large-workers: 1–8"),
        ({"large_workers": 2}, "goes with --large"),
    ],
)
def test_large_workers_is_bounded(bench, options, message):
    with pytest.raises(CommandError, match=message):
        bench(**options, stdout=io.StringIO(), stderr=io.StringIO())
    assert not BulkOperation.objects.exists()
