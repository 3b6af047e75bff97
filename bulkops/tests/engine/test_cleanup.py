"""``bulkops_cleanup`` (DESIGN.md §7.4): expired export files, operations past retention,
finished task results — and nothing else."""

from __future__ import annotations

import datetime
import os

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from bulkops.engine import operations_cleanup
from bulkops.exports.storage import export_path
from bulkops.models import BulkOperation, BulkOperationItem
from bulkops.tests.support.helpers import execute, run_worker

DAY = datetime.timedelta(days=1)


@pytest.fixture
def world(owner, make_session, settings):
    """Two finished exports (one expired), an old and a recent finished close, an old
    running one, and their task rows."""
    settings.BULKOPS_OPERATION_RETENTION_DAYS = 30
    for i in range(4):
        make_session(owner, id=f"s{i}")
    now = timezone.now()
    fresh_export = execute(owner, "export", ["s0"], format="csv")
    expired_export = execute(owner, "export", ["s1"], format="json")
    BulkOperation.objects.filter(pk=expired_export.pk).update(
        expires_at=now - datetime.timedelta(seconds=1)
    )
    old = execute(owner, "close", ["s2"])
    BulkOperation.objects.filter(pk=old.pk).update(finished_at=now - 31 * DAY)
    recent = execute(owner, "close", ["s3"])
    running = execute(owner, "restore", ["s3"])
    BulkOperation.objects.filter(pk=running.pk).update(
        status="running", finished_at=None, created_at=now - 40 * DAY
    )
    DBTaskResult.objects.update(finished_at=now - 2 * DAY)
    queued = DBTaskResult.objects.create(
        args_kwargs={"args": [], "kwargs": {"operation_id": "op-x"}},
        task_path="bulkops.engine.queue.run_bulk_operation",
        backend_name="default",
        run_after=now,
    )
    part = export_path("session_export_20200101_op-crashed.csv.part")
    part.write_text("id\n")
    stale = (now - 2 * DAY).timestamp()
    os.utime(part, (stale, stale))
    for op in (fresh_export, expired_export):
        op.refresh_from_db()
        assert export_path(op.export_file).is_file()
    return {
        "fresh_export": fresh_export,
        "expired_export": expired_export,
        "old": old,
        "recent": recent,
        "running": running,
        "queued": queued,
        "part": part,
    }


def test_cleanup_removes_what_has_served_its_time_and_nothing_else(world):
    result = operations_cleanup()
    assert (result.export_files, result.operations, result.task_results) == (2, 1, 5)
    assert not export_path(world["expired_export"].export_file).exists()
    assert not world["part"].exists()
    assert export_path(world["fresh_export"].export_file).is_file()
    remaining = set(BulkOperation.objects.values_list("pk", flat=True))
    assert world["old"].pk not in remaining
    assert not BulkOperationItem.objects.filter(operation_id=world["old"].pk).exists()
    # Expired exports keep their row (the download answers 410); running ones are kept.
    assert {
        world[k].pk for k in ("fresh_export", "expired_export", "recent", "running")
    } <= remaining
    assert list(DBTaskResult.objects.values_list("pk", flat=True)) == [world["queued"].pk]
    assert DBTaskResult.objects.get().status == TaskResultStatus.READY


def test_cleanup_dry_run_counts_and_deletes_nothing(world):
    before = (BulkOperation.objects.count(), DBTaskResult.objects.count())
    result = operations_cleanup(dry_run=True)
    assert (result.export_files, result.operations, result.task_results) == (2, 1, 5)
    assert (BulkOperation.objects.count(), DBTaskResult.objects.count()) == before
    assert export_path(world["expired_export"].export_file).is_file()
    assert world["part"].exists()


def test_cleanup_old_operation_takes_its_export_file_with_it(world):
    BulkOperation.objects.filter(pk=world["fresh_export"].pk).update(
        finished_at=timezone.now() - 31 * DAY
    )
    result = operations_cleanup()
    assert result.operations == 2
    assert not export_path(world["fresh_export"].export_file).exists()


def test_cleanup_command(world, capsys):
    call_command("bulkops_cleanup", dry_run=True)
    assert "Would remove 2 export file(s), 1 operation(s), 5 task result(s)." in (
        capsys.readouterr().out
    )
    call_command("bulkops_cleanup", retention_days=0, task_results_days=3)
    assert "Removed 3 export file(s), 4 operation(s), 0 task result(s)." in (
        capsys.readouterr().out
    )
    assert set(BulkOperation.objects.values_list("status", flat=True)) == {"running"}


def test_an_undone_operation_goes_with_its_last_undo_not_before(owner, make_session, settings):
    """An undo needs the operation it undoes (its items, its action, its timestamps):
    cleanup keeps that operation while any undo of it is kept, and removes both in the
    run that finds the undo past retention too."""
    from bulkops.engine import operation_undo

    settings.BULKOPS_OPERATION_RETENTION_DAYS = 30
    make_session(owner, id="u1")
    closed = execute(owner, "close", ["u1"])
    undo = operation_undo(operation=closed, user=owner).operation
    run_worker()
    now = timezone.now()
    BulkOperation.objects.filter(pk=closed.pk).update(finished_at=now - 40 * DAY)
    assert operations_cleanup().operations == 0
    assert BulkOperation.objects.filter(pk__in=[closed.pk, undo.pk]).count() == 2
    BulkOperation.objects.filter(pk=undo.pk).update(finished_at=now - 31 * DAY)
    assert operations_cleanup(dry_run=True).operations == 2
    assert operations_cleanup().operations == 2
    assert not BulkOperation.objects.filter(pk__in=[closed.pk, undo.pk]).exists()
