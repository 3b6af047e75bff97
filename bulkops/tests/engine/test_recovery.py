"""Crash safety in one process: the reaper, the graceful hand-off, the attempt limit
(DESIGN.md §7.3). The same with real killed processes: integration/test_crash.py."""

from __future__ import annotations

import datetime

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from bulkops.engine import (
    Selection,
    executor,
    operation_create,
    operation_execute,
    operation_hand_off,
    operation_reap_stale,
    queue,
)
from bulkops.models import BulkOperation
from bulkops.tests.support.helpers import assert_counters_add_up, outcomes, run_worker
from bulkops.worker import make_worker

LONG_AGO = datetime.timedelta(minutes=10)


def task_rows(op) -> dict[str, int]:
    rows = queue.operation_tasks(op.pk).values_list("status", flat=True)
    return {status: list(rows).count(status) for status in set(rows)}


@pytest.fixture
def crashed(owner, make_session, settings):
    """An operation whose worker died after its first chunk: running, stale heartbeat,
    its task row left RUNNING (as django-tasks-db leaves it after a SIGKILL)."""
    settings.BULKOPS_CHUNK_SIZE = 2
    ids = [make_session(owner, id=f"s{i}").pk for i in range(6)]
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=ids)
    ).operation
    calls = iter([False, True])
    operation_execute(operation_id=op.pk, should_stop=lambda: next(calls))
    queue.operation_tasks(op.pk).update(
        status=TaskResultStatus.RUNNING, started_at=timezone.now() - LONG_AGO
    )
    BulkOperation.objects.filter(pk=op.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
    op.refresh_from_db()
    assert (op.status, op.processed, op.attempts) == ("running", 2, 1)
    return op


def test_reaper_resumes_a_stale_operation_and_nothing_is_applied_twice(crashed):
    assert operation_reap_stale() == [crashed.pk]
    assert task_rows(crashed) == {TaskResultStatus.FAILED: 1, TaskResultStatus.READY: 1}
    lost = queue.operation_tasks(crashed.pk).get(status=TaskResultStatus.FAILED)
    assert lost.exception_class_path == queue.WORKER_LOST
    run_worker()
    crashed.refresh_from_db()
    assert (crashed.status, crashed.processed, crashed.succeeded, crashed.skipped) == (
        "completed",
        6,
        6,
        0,
    )
    assert crashed.attempts == 2
    assert set(outcomes(crashed).values()) == {("succeeded", "")}
    assert_counters_add_up(crashed)


def test_reaper_leaves_a_live_operation_alone(crashed):
    BulkOperation.objects.filter(pk=crashed.pk).update(heartbeat_at=timezone.now())
    assert operation_reap_stale() == []
    assert task_rows(crashed) == {TaskResultStatus.RUNNING: 1}


def test_reaper_leaves_an_operation_whose_task_is_still_queued(crashed):
    assert operation_reap_stale() == [crashed.pk]
    # Enqueued once: the next passes (any worker's) see the queued task and wait for it.
    BulkOperation.objects.filter(pk=crashed.pk).update(heartbeat_at=timezone.now() - LONG_AGO)
    assert operation_reap_stale() == []
    assert task_rows(crashed)[TaskResultStatus.READY] == 1


def test_reaper_stale_after_is_the_setting(crashed, settings):
    settings.BULKOPS_STALE_AFTER_SECONDS = 3600
    assert operation_reap_stale() == []
    settings.BULKOPS_STALE_AFTER_SECONDS = 60
    assert operation_reap_stale() == [crashed.pk]


def test_reaper_restarts_a_pending_operation_whose_task_is_gone(owner, make_session):
    make_session(owner, id="s1")
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=["s1"])
    ).operation
    queue.operation_tasks(op.pk).delete()
    assert operation_reap_stale() == []  # young: its task may just be on its way
    BulkOperation.objects.filter(pk=op.pk).update(created_at=timezone.now() - LONG_AGO)
    assert operation_reap_stale() == [op.pk]
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded, op.attempts) == ("completed", 1, 1)


def test_reaper_leaves_an_old_pending_operation_that_is_queued(owner, make_session):
    make_session(owner, id="s1")
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=["s1"])
    ).operation
    BulkOperation.objects.filter(pk=op.pk).update(created_at=timezone.now() - LONG_AGO)
    assert operation_reap_stale() == []


def test_an_operation_that_keeps_crashing_fails_after_max_attempts(crashed, settings):
    settings.BULKOPS_MAX_ATTEMPTS = 2
    BulkOperation.objects.filter(pk=crashed.pk).update(attempts=2)
    assert operation_reap_stale() == [crashed.pk]
    run_worker()
    crashed.refresh_from_db()
    assert crashed.status == "failed"
    assert "Gave up after 2 attempts" in crashed.error
    # The chunk that had committed keeps its outcome; the rest fail, counted.
    assert (crashed.succeeded, crashed.failed, crashed.processed) == (2, 4, 6)
    assert_counters_add_up(crashed)


def test_db_worker_reaps_when_it_starts(crashed):
    run_worker()
    crashed.refresh_from_db()
    assert (crashed.status, crashed.succeeded) == ("completed", 6)


def test_bulkops_reap_command(crashed, capsys):
    call_command("bulkops_reap")
    out = capsys.readouterr().out
    assert crashed.pk in out and "1 operation(s) enqueued again." in out
    call_command("bulkops_reap", stale_after=3600)
    assert "0 operation(s)" in capsys.readouterr().out


def test_graceful_stop_finishes_the_chunk_and_hands_off(owner, make_session, settings, monkeypatch):
    """SIGTERM (the worker's ``stopping``): the chunk in progress commits, the operation stays
    running, and the worker enqueues it again at once with the attempt given back."""
    settings.BULKOPS_CHUNK_SIZE = 2
    ids = [make_session(owner, id=f"s{i}").pk for i in range(6)]
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=ids)
    ).operation
    original = executor.Publisher.chunk
    worker = make_worker()

    def chunk_then_sigterm(self, part):
        original(self, part)
        worker.stopping.set()

    monkeypatch.setattr(executor.Publisher, "chunk", chunk_then_sigterm)
    task = DBTaskResult.objects.ready().get()
    task.claim(worker.worker_id)
    worker.run_task(task)
    op.refresh_from_db()
    assert (op.status, op.processed, op.attempts) == ("running", 2, 0)
    assert task_rows(op) == {TaskResultStatus.SUCCESSFUL: 1, TaskResultStatus.READY: 1}
    monkeypatch.setattr(executor.Publisher, "chunk", original)
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded, op.attempts) == ("completed", 6, 1)
    assert_counters_add_up(op)


def test_hand_off_of_a_finished_operation_does_nothing(owner, make_session):
    make_session(owner, id="s1")
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=["s1"])
    ).operation
    run_worker()
    assert operation_hand_off(operation_id=op.pk) is False
    assert task_rows(op) == {TaskResultStatus.SUCCESSFUL: 1}
