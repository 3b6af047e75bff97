"""Pause, resume and the failure threshold (issue 10 §4): the engine's services and
the executor's stops between chunks. The same across real worker processes:
integration/test_pause.py."""

from __future__ import annotations

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_tasks import TaskResultStatus

from bulkops.engine import (
    Selection,
    executor,
    operation_cancel,
    operation_create,
    operation_execute,
    operation_pause,
    operation_reap_stale,
    operation_resume,
    operation_retry,
    queue,
)
from bulkops.exceptions import OperationConflict, TooManyActiveOperations
from bulkops.models import BulkOperation, BulkOperationItem, Session
from bulkops.selectors import active_operations_count
from bulkops.tests.support.helpers import assert_counters_add_up, outcomes, run_worker

pytestmark = pytest.mark.django_db

LONG_AGO = datetime.timedelta(minutes=10)


def create(owner, ids, **kwargs) -> BulkOperation:
    return operation_create(
        user=owner, action="close", selection=Selection(session_ids=ids), **kwargs
    ).operation


def run(owner, ids, *, max_failures=None) -> BulkOperation:
    op = create(owner, ids, max_failures=max_failures)
    run_worker()
    op.refresh_from_db()
    return op


def closed_at(ids) -> dict:
    return dict(Session.objects.filter(pk__in=ids).values_list("pk", "closed_at"))


def queued_tasks(op) -> int:
    return queue.operation_tasks(op.pk).filter(status=TaskResultStatus.READY).count()


@pytest.fixture
def six(owner, make_session, settings):
    settings.BULKOPS_CHUNK_SIZE = 2
    return [make_session(owner, id=f"s{i}").pk for i in range(6)]


@pytest.fixture
def pause_in_first_chunk(monkeypatch):
    """Ask for a pause while the first chunk runs (as a request arriving mid-chunk):
    after its outcomes are written (``record``, each chunk's last step whichever way it
    applied — in SQL on PostgreSQL or through ``apply``)."""
    original = executor.record
    calls = {"n": 0}

    def record(operation, part, now):
        original(operation, part, now)
        calls["n"] += 1
        if calls["n"] == 1:
            operation_pause(operation=operation)

    monkeypatch.setattr(executor, "record", record)
    return original


# --- pause ---------------------------------------------------------------------------------
def test_pause_of_a_running_operation_stops_at_the_chunk_boundary_and_keeps_items_pending(
    owner, six, pause_in_first_chunk
):
    op = create(owner, six)
    operation_execute(operation_id=op.pk)
    op.refresh_from_db()
    assert (op.status, op.pause_requested, op.processed, op.succeeded) == ("paused", False, 2, 2)
    assert op.paused_at is not None and not op.is_finished and op.finished_at is None
    assert op.attempts == 0  # given back: a pause is not a crash
    assert (
        sorted(op.items.filter(outcome="pending").values_list("session_id", flat=True)) == (six[2:])
    )
    assert sorted(closed_at(six)[sid] is not None for sid in six) == [False] * 4 + [True] * 2
    assert_counters_add_up(op)


def test_a_pause_or_cancel_asked_during_the_last_chunk_lets_the_operation_complete(
    owner, six, monkeypatch
):
    # Nothing is left to pause or cancel: the operation ends as its items did, and is
    # not left "pausing".
    for stop in (operation_pause, operation_cancel):
        original = executor.record

        def record(operation, part, now, stop=stop, original=original):
            original(operation, part, now)
            stop(operation=operation)

        monkeypatch.setattr(executor, "record", record)
        sid = six.pop()  # one session: a chunk (of 2) that reads fewer is the last
        op = create(owner, [sid])
        operation_execute(operation_id=op.pk)
        op.refresh_from_db()
        assert (op.status, op.pause_requested, op.succeeded) == ("completed", False, 1)
        assert closed_at([sid])[sid] is not None
        monkeypatch.setattr(executor, "record", original)


def test_resume_finishes_the_rest_with_every_item_applied_exactly_once(
    owner, six, pause_in_first_chunk, monkeypatch
):
    op = create(owner, six)
    operation_execute(operation_id=op.pk)
    first = {sid: at for sid, at in closed_at(six).items() if at is not None}
    monkeypatch.setattr(executor, "record", pause_in_first_chunk)
    resumed = operation_resume(operation=op)
    assert (resumed.status, resumed.paused_at) == ("pending", None)
    assert queued_tasks(op) == 1
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.processed, op.succeeded, op.attempts) == ("completed", 6, 6, 1)
    assert set(outcomes(op).values()) == {("succeeded", "")}
    for sid, at in first.items():
        assert closed_at([sid])[sid] == at  # not applied a second time
    assert_counters_add_up(op)


def test_pause_of_a_pending_operation_is_at_once_and_its_queued_task_does_nothing(owner, six):
    op = create(owner, six)
    paused = operation_pause(operation=op)
    assert paused.status == "paused" and paused.paused_at is not None
    run_worker()  # the task queued at creation finds it paused and returns
    op.refresh_from_db()
    assert (op.status, op.processed, op.attempts) == ("paused", 0, 0)
    assert Session.objects.filter(status="closed").count() == 0
    operation_resume(operation=op)
    assert queued_tasks(op) == 1
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded) == ("completed", 6)
    assert op.paused_seconds == 0.0  # it had not started: no running time was paused


def test_resume_before_the_queued_task_ran_enqueues_no_second_task(owner, six):
    op = create(owner, six)
    operation_pause(operation=op)
    operation_resume(operation=op)
    assert queued_tasks(op) == 1
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded, op.attempts) == ("completed", 6, 1)


def test_asking_twice_to_pause_a_running_operation_changes_nothing_more(owner, six):
    op = create(owner, six)
    BulkOperation.objects.filter(pk=op.pk).update(status="running", attempts=1)
    first = operation_pause(operation=op)
    again = operation_pause(operation=op)
    assert (first.status, first.pause_requested) == ("running", True)
    assert again.version == first.version


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"status": "completed"}, "already finished"),
        ({"status": "cancelled"}, "already finished"),
        ({"status": "paused"}, "already paused"),
        ({"status": "running", "cancel_requested": True}, "being cancelled"),
    ],
)
def test_pause_in_the_wrong_state_is_a_conflict_and_changes_nothing(owner, six, state, message):
    op = create(owner, six)
    BulkOperation.objects.filter(pk=op.pk).update(**state)
    before = BulkOperation.objects.values().get(pk=op.pk)
    with pytest.raises(OperationConflict, match=message):
        operation_pause(operation=op)
    assert BulkOperation.objects.values().get(pk=op.pk) == before


def test_a_running_atomic_operation_cannot_be_paused_but_a_pending_one_can(owner, six):
    op = create(owner, six, params={"atomic": True})
    assert operation_pause(operation=op).status == "paused"
    BulkOperation.objects.filter(pk=op.pk).update(status="running")
    with pytest.raises(OperationConflict, match="all-or-nothing"):
        operation_pause(operation=op)


@pytest.mark.parametrize(
    "state",
    [
        {"status": "pending"},
        {"status": "running"},
        {"status": "running", "pause_requested": True},
        {"status": "completed"},
        {"status": "failed"},
    ],
)
def test_resume_of_an_operation_that_is_not_paused_is_a_conflict(owner, six, state):
    op = create(owner, six)
    BulkOperation.objects.filter(pk=op.pk).update(**state)
    before = BulkOperation.objects.values().get(pk=op.pk)
    with pytest.raises(OperationConflict, match="Only a paused operation can be resumed"):
        operation_resume(operation=op)
    assert BulkOperation.objects.values().get(pk=op.pk) == before
    assert queued_tasks(op) == 1  # only the one from creation


@pytest.mark.parametrize(
    ("started_ago", "status", "items"),
    [
        # Started 110 s ago and paused for the last 100: 10 s of running time < 60 s.
        (110, "completed", ("succeeded", "")),
        # Started 200 s ago and paused for the last 100: 100 s of running time > 60 s.
        (200, "cancelled", ("cancelled", "timeout")),
    ],
)
def test_time_paused_does_not_count_toward_the_timeout(
    owner, six, settings, started_ago, status, items
):
    settings.BULKOPS_OPERATION_TIMEOUT_SECONDS = 60
    op = create(owner, six)
    now = timezone.now()
    BulkOperation.objects.filter(pk=op.pk).update(
        status="paused",
        started_at=now - datetime.timedelta(seconds=started_ago),
        paused_at=now - datetime.timedelta(seconds=100),
    )
    operation_resume(operation=op)
    op.refresh_from_db()
    assert op.paused_seconds >= 100
    run_worker()
    op.refresh_from_db()
    assert op.status == status
    assert set(outcomes(op).values()) == {items}


def test_cancel_of_a_paused_operation_cancels_the_rest_at_once(owner, six, pause_in_first_chunk):
    op = create(owner, six)
    operation_execute(operation_id=op.pk)
    cancelled = operation_cancel(operation=op)
    assert (cancelled.status, cancelled.succeeded, cancelled.cancelled) == ("cancelled", 2, 4)
    assert cancelled.error == "Cancelled on request."
    assert sorted(outcomes(op).values()).count(("cancelled", "cancelled")) == 4
    assert Session.objects.filter(status="closed").count() == 2
    assert_counters_add_up(cancelled)
    with pytest.raises(OperationConflict):
        operation_resume(operation=op)


def test_the_reaper_never_resumes_a_paused_operation(owner, six):
    op = create(owner, six)
    operation_pause(operation=op)
    queue.operation_tasks(op.pk).delete()
    BulkOperation.objects.filter(pk=op.pk).update(
        created_at=timezone.now() - LONG_AGO, heartbeat_at=timezone.now() - LONG_AGO
    )
    assert operation_reap_stale() == []
    assert queued_tasks(op) == 0
    op.refresh_from_db()
    assert op.status == "paused" and not op.is_finished


def test_a_paused_operation_counts_toward_the_active_cap(owner, make_session, settings):
    settings.BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER = 1
    op = create(owner, [make_session(owner).pk])
    operation_pause(operation=op)
    assert active_operations_count(user=owner) == 1
    with pytest.raises(TooManyActiveOperations):
        create(owner, [make_session(owner).pk])


def test_pause_and_resume_again_and_again_never_exhaust_the_attempts(
    owner, six, settings, monkeypatch
):
    settings.BULKOPS_MAX_ATTEMPTS = 1
    original = executor.record

    def pause_after_each_chunk(operation, part, now):
        original(operation, part, now)
        operation_pause(operation=operation)

    monkeypatch.setattr(executor, "record", pause_after_each_chunk)
    op = create(owner, six)
    for processed in (2, 4, 6):
        run_worker()
        op.refresh_from_db()
        assert (op.status, op.processed) == ("paused", processed)
        operation_resume(operation=op)
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded) == ("completed", 6)


# --- the failure threshold -----------------------------------------------------------------
@pytest.fixture
def mixed(owner, make_session, settings):
    """Five ids run one per chunk in this order; ``a-gone`` and ``c-gone`` fail."""
    settings.BULKOPS_CHUNK_SIZE = 1
    for sid in ("b-ok", "d-ok", "e-ok"):
        make_session(owner, id=sid)
    return ["a-gone", "b-ok", "c-gone", "d-ok", "e-ok"]


def test_max_failures_zero_stops_after_the_first_failure(owner, mixed):
    op = run(owner, mixed, max_failures=0)
    assert op.status == "failed"
    assert op.error.startswith("Stopped at the failure threshold: 1 sessions failed")
    assert outcomes(op) == {
        "a-gone": ("failed", "not_found"),
        "b-ok": ("cancelled", "failure_threshold"),
        "c-gone": ("cancelled", "failure_threshold"),
        "d-ok": ("cancelled", "failure_threshold"),
        "e-ok": ("cancelled", "failure_threshold"),
    }
    assert Session.objects.filter(status="closed").count() == 0
    item = BulkOperationItem.objects.get(operation=op, session_id="b-ok")
    assert "max_failures" in item.message
    assert_counters_add_up(op)


def test_max_failures_one_lets_one_failure_pass_and_stops_at_the_second(owner, mixed):
    op = run(owner, mixed, max_failures=1)
    assert (op.status, op.succeeded, op.failed, op.cancelled) == ("failed", 1, 2, 2)
    assert outcomes(op)["d-ok"] == outcomes(op)["e-ok"] == ("cancelled", "failure_threshold")
    assert sorted(Session.objects.filter(status="closed").values_list("pk", flat=True)) == ["b-ok"]
    assert_counters_add_up(op)


def test_exactly_max_failures_failures_do_not_stop_the_operation(owner, mixed):
    op = run(owner, mixed, max_failures=2)
    assert (op.status, op.succeeded, op.failed, op.cancelled) == ("partial", 3, 2, 0)
    assert op.error == ""


def test_without_max_failures_nothing_stops_and_params_say_nothing(owner, mixed):
    op = run(owner, mixed)
    assert (op.status, op.succeeded, op.failed) == ("partial", 3, 2)
    assert "max_failures" not in op.params


def test_max_failures_is_kept_in_params_and_by_a_retry(owner, make_session):
    busy = make_session(owner, status="processing")
    op = run(owner, [busy.pk], max_failures=5)
    assert (op.status, op.params["max_failures"]) == ("failed", 5)
    retry = operation_retry(operation=op, user=owner).operation
    assert retry.params == op.params


def test_crossing_the_threshold_on_the_last_chunk_still_fails_the_operation(
    owner, make_session, settings
):
    settings.BULKOPS_CHUNK_SIZE = 1
    make_session(owner, id="a-ok")
    op = run(owner, ["a-ok", "z-gone"], max_failures=0)
    assert (op.status, op.succeeded, op.failed, op.cancelled) == ("failed", 1, 1, 0)
    assert "failure threshold" in op.error


@pytest.mark.parametrize("bad", [-1, True, False, "1", 1.5, 10**7, [1], {"n": 1}])
def test_bad_max_failures_are_refused_and_nothing_is_created(owner, make_session, bad):
    sid = make_session(owner).pk
    with pytest.raises(ValidationError, match="max_failures"):
        create(owner, [sid], max_failures=bad)
    assert not BulkOperation.objects.exists()
