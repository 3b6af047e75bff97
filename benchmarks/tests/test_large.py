"""bulkops_bench --large: a smoke run at a small size on PostgreSQL; the shape of its
figures and that the table ends as it began, never its timings."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError

from benchmarks.large import LargeBench, render_large
from bulkops.models import BulkOperation, Session
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
def test_on_sqlite_it_is_refused(bench):
    with pytest.raises(CommandError, match="needs PostgreSQL"):
        bench(large="100k", stdout=io.StringIO(), stderr=io.StringIO())
