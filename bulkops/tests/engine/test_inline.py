"""Small operations run in the request that starts them (``engine.inline``): the same
operation, items, outcomes and rules, finished before the answer, events after commit;
exports, larger operations and a failed inline run are queued as usual."""

from __future__ import annotations

from unittest import mock

import pytest
from channels.layers import InMemoryChannelLayer
from django.db import OperationalError

from bulkops import events
from bulkops.engine import Selection, executor, inline, operation_create, operation_undo
from bulkops.engine.chunks import FIRST_CHUNK
from bulkops.engine.queue import operation_tasks
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.helpers import assert_counters_add_up, outcomes, run_worker

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def inline_on(settings):
    settings.BULKOPS_INLINE_MAX_SESSIONS = 3


def close(user, ids, **params):
    return operation_create(
        user=user, action="close", selection=Selection(session_ids=ids), params=params
    )


def test_a_small_close_is_finished_when_it_is_returned_and_queues_no_task(owner, make_session):
    ids = [make_session(owner).pk, make_session(owner, status="closed").pk, "nope"]
    started = close(owner, ids)
    op = started.operation
    assert started.replayed is False
    assert (op.status, op.succeeded, op.skipped, op.failed) == ("partial", 1, 1, 1)
    assert op.started_at is not None and op.finished_at is not None
    assert outcomes(op) == {
        ids[0]: ("succeeded", ""),
        ids[1]: ("skipped", "already_closed"),
        "nope": ("failed", "not_found"),
    }
    assert_counters_add_up(op)
    assert Session.objects.get(pk=ids[0]).status == "closed"
    assert not operation_tasks(op.pk).exists()
    # What is returned is the row as stored, field by field (it is not read back).
    fresh = BulkOperation.objects.get(pk=op.pk)
    fields = [f.attname for f in BulkOperation._meta.concrete_fields]
    assert {f: getattr(op, f) for f in fields} == {f: getattr(fresh, f) for f in fields}


def test_an_operation_over_the_inline_limit_is_queued_for_a_worker(owner, make_session):
    ids = [make_session(owner).pk for _ in range(4)]
    op = close(owner, ids).operation
    assert op.status == "pending"
    assert operation_tasks(op.pk).count() == 1
    assert set(Session.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"active"}
    run_worker()
    op.refresh_from_db()
    assert op.status == "completed"


def test_an_export_is_queued_even_when_small(owner, make_session):
    ids = [make_session(owner).pk]
    op = operation_create(
        user=owner, action="export", selection=Selection(session_ids=ids), params={"format": "csv"}
    ).operation
    assert op.status == "pending"
    assert operation_tasks(op.pk).count() == 1


def test_an_atomic_operation_with_an_ineligible_session_fails_whole_and_changes_nothing(
    owner, make_session
):
    ok, busy = make_session(owner).pk, make_session(owner, status="processing").pk
    op = close(owner, [ok, busy], atomic=True).operation
    assert op.status == "failed"
    assert outcomes(op) == {ok: ("failed", "atomic_rollback"), busy: ("failed", "processing")}
    assert Session.objects.get(pk=ok).status == "active"


def test_a_replay_answers_the_finished_operation_and_creates_nothing(owner, make_session):
    sid = make_session(owner).pk
    kwargs = dict(
        user=owner, action="close", selection=Selection(session_ids=[sid]), idempotency_key="k"
    )
    first = operation_create(**kwargs)
    again = operation_create(**kwargs)
    assert again.replayed is True
    assert again.operation.pk == first.operation.pk and again.operation.status == "completed"
    assert BulkOperation.objects.count() == 1


def test_an_undo_of_a_small_operation_runs_inline_too(owner, make_session):
    ids = [make_session(owner).pk, make_session(owner).pk]
    done = close(owner, ids).operation
    undo = operation_undo(operation=done, user=owner).operation
    assert (undo.action, undo.status, undo.succeeded) == ("undo", "completed", 2)
    assert set(Session.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"active"}


class RecordingLayer(InMemoryChannelLayer):
    """The in-memory layer, remembering every event sent to a group."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict] = []

    async def group_send(self, group, message):
        self.sent.extend(
            message["events"] if message["type"] == "bulk.events" else [message["event"]]
        )
        await super().group_send(group, message)


def test_events_are_sent_only_once_the_transaction_has_committed(
    owner, make_session, monkeypatch, django_capture_on_commit_callbacks
):
    layer = RecordingLayer()
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    sid = make_session(owner).pk
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        op = close(owner, [sid]).operation
    assert op.status == "completed"
    assert layer.sent == []  # committed state only: nothing before the commit
    for callback in callbacks:
        callback()
    assert [e["type"] for e in layer.sent] == [
        "bulk_operation_started",
        "sessions_updated",
        "bulk_operation_completed",
    ]
    assert layer.sent[-1]["version"] == op.version
    assert layer.sent[1]["session_ids"] == [sid]


@pytest.mark.parametrize("atomic", [False, True], ids=["plain", "atomic"])
def test_a_database_error_in_the_inline_run_rolls_it_back_and_queues_the_operation(
    owner, make_session, monkeypatch, django_capture_on_commit_callbacks, atomic
):
    """Say the run met a deadlock after its chunk: nothing it did stays (the session
    is untouched, the operation pending, no event goes out) and a worker runs it."""
    layer = RecordingLayer()
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    sid = make_session(owner).pk
    # A plain operation's run applies its chunks itself; an atomic one's is the worker's.
    name = "operation_execute" if atomic else "apply_chunk"
    real = getattr(inline, name)

    def run_then_deadlock(*args, **kwargs):
        real(*args, **kwargs)
        raise OperationalError("deadlock detected")

    with mock.patch.object(inline, name, run_then_deadlock):
        with django_capture_on_commit_callbacks(execute=True):
            op = close(owner, [sid], **({"atomic": True} if atomic else {})).operation
    assert (op.status, op.version, op.started_at) == ("pending", 0, None)
    assert BulkOperation.objects.get(pk=op.pk).status == "pending"
    assert Session.objects.get(pk=sid).status == "active"
    assert op.items.get().outcome == "pending"
    assert layer.sent == []
    assert operation_tasks(op.pk).count() == 1
    run_worker()
    op.refresh_from_db()
    assert op.status == "completed"
    assert Session.objects.get(pk=sid).status == "closed"


def test_a_hooks_error_ends_the_operation_failed_as_a_workers_run_does(
    owner, make_session, monkeypatch
):
    """The inline run is rolled back and the worker's path ends the operation: here
    (``begin`` raised) its items fail ``internal_error`` and the error says why."""
    sid = make_session(owner).pk
    from bulkops.actions.close import CloseAction

    def broken(self, operation):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(CloseAction, "begin", broken, raising=False)
    op = close(owner, [sid]).operation
    assert op.status == "failed" and "disk on fire" in op.error
    assert outcomes(op) == {sid: ("failed", "internal_error")}
    assert Session.objects.get(pk=sid).status == "active"
    assert not operation_tasks(op.pk).exists()


def test_the_failure_threshold_ends_an_inline_run_as_it_ends_a_workers(
    owner, make_session, settings
):
    def threshold_close(ids):
        return operation_create(
            user=owner, action="close", selection=Selection(session_ids=ids), max_failures=0
        ).operation

    inline_op = threshold_close(["nope", make_session(owner).pk])
    settings.BULKOPS_INLINE_MAX_SESSIONS = 0
    queued = threshold_close(["nope", make_session(owner).pk])
    run_worker()
    queued.refresh_from_db()
    row = BulkOperation.objects.get(pk=inline_op.pk)
    ended = ("status", "error", "processed", "succeeded", "failed", "version", "attempts")
    assert [getattr(row, f) for f in ended] == [getattr(queued, f) for f in ended]
    assert [getattr(inline_op, f) for f in ended] == [getattr(row, f) for f in ended]
    assert row.status == "failed" and row.error.startswith("Stopped at the failure threshold")
    assert_counters_add_up(row)


def test_a_threshold_reached_before_the_last_chunk_still_gives_every_session_its_item(
    owner, make_session, settings
):
    """An inline run writes each chunk's items after it, with their outcomes: when the
    failure threshold stops it after its first chunk, the sessions it never reached
    still get their item (ended as a worker's run ends them) and none is changed."""
    settings.BULKOPS_INLINE_MAX_SESSIONS = 30
    missing = "0-missing"  # sorts first: the first chunk meets it
    ids = [missing, *sorted(make_session(owner).pk for _ in range(24))]
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=ids), max_failures=0
    ).operation
    row = BulkOperation.objects.get(pk=op.pk)
    assert row.status == "failed" and row.error.startswith("Stopped at the failure threshold")
    assert sorted(row.items.values_list("session_id", flat=True)) == sorted(ids)
    found = outcomes(row)
    assert found[missing] == ("failed", "not_found")
    unreached = ids[FIRST_CHUNK:]
    assert {found[sid] for sid in unreached} == {("cancelled", "failure_threshold")}
    assert Session.objects.filter(pk__in=unreached, status="closed").count() == 0
    assert not row.items.filter(outcome="pending").exists()
    assert_counters_add_up(row)


def test_an_inline_run_of_several_chunks_sends_the_events_a_workers_run_sends(
    owner, make_session, monkeypatch, settings, django_capture_on_commit_callbacks
):
    """Started, each chunk's sessions and progress (coalesced as a worker's), the
    final event last, carrying the row's last version."""
    settings.BULKOPS_INLINE_MAX_SESSIONS = 30
    monkeypatch.setattr(executor.Publisher, "MIN_INTERVAL", 0)
    layer = RecordingLayer()
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    ids = sorted(make_session(owner).pk for _ in range(25))
    with django_capture_on_commit_callbacks(execute=True):
        op = close(owner, ids).operation
    assert [e["type"] for e in layer.sent] == [
        "bulk_operation_started",
        "sessions_updated",
        "bulk_operation_progress",
        "sessions_updated",
        "bulk_operation_completed",
    ]
    assert layer.sent[1]["session_ids"] + layer.sent[3]["session_ids"] == ids
    assert (layer.sent[2]["processed"], layer.sent[-1]["processed"]) == (FIRST_CHUNK, 25)
    versions = [e["version"] for e in layer.sent if "version" in e]
    assert versions == sorted(versions) and versions[-1] == op.version
    assert BulkOperation.objects.get(pk=op.pk).version == op.version == 4
