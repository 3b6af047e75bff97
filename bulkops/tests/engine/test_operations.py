"""The engine's services: selection, validate, create, execute, cancel, retry, resume."""

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from bulkops.engine import (
    Selection,
    executor,
    operation_cancel,
    operation_create,
    operation_execute,
    operation_replay,
    operation_retry,
    operation_validate,
)
from bulkops.exceptions import (
    IdempotencyConflict,
    OperationConflict,
    TooManyActiveOperations,
)
from bulkops.models import BulkOperation, BulkOperationItem, Session
from bulkops.selectors import active_operations_count
from bulkops.tests.support.helpers import assert_counters_add_up, execute, outcomes, run_worker

pytestmark = pytest.mark.django_db


def snapshot():
    return list(
        Session.objects.order_by("pk").values_list(
            "pk", "status", "deleted_at", "closed_at", "content"
        )
    )


# --- selection ---------------------------------------------------------------------
def test_selection_of_exactly_the_cap_works(owner, make_session, settings):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 1000
    ids = [f"bulk-{i:04d}" for i in range(1000)]
    Session.objects.bulk_create(Session(id=i, owner=owner) for i in ids)
    op = execute(owner, "close", ids)
    assert (op.total, op.succeeded) == (1000, 1000)
    assert Session.objects.filter(status="closed").count() == 1000


def test_selection_one_past_the_cap_is_refused(owner):
    ids = [f"bulk-{i:04d}" for i in range(1001)]
    with pytest.raises(ValidationError, match="At most 1000"):
        operation_create(user=owner, action="close", selection=Selection(session_ids=ids))
    assert not BulkOperation.objects.exists()


@pytest.mark.parametrize(
    ("session_ids", "message"),
    [
        ([], "at least one"),
        ("abc", "list"),
        ([1, 2], "string"),
        ([None], "string"),
        ([{"id": "x"}], "string"),
        (["../etc/passwd"], "Malformed"),
        (["a\x00b"], "Malformed"),
        (["x' OR 1=1 --"], "Malformed"),
        (["-starts-with-dash"], "Malformed"),
        (["a" * 65], "Malformed"),
        (["dup", "ok", "dup"], "Duplicate session ids: dup"),
    ],
)
def test_bad_session_ids_are_refused_and_nothing_is_created(owner, session_ids, message):
    with pytest.raises(ValidationError, match=message):
        operation_create(user=owner, action="close", selection=Selection(session_ids=session_ids))
    assert not BulkOperation.objects.exists()
    assert not BulkOperationItem.objects.exists()


def test_exactly_one_of_ids_or_filter(owner):
    for selection in (Selection(), Selection(session_ids=["a"], filter={})):
        with pytest.raises(ValidationError, match="exactly one"):
            operation_validate(user=owner, action="close", selection=selection)


def test_filter_selects_all_that_match_within_scope(owner, stranger, make_session):
    mine = [make_session(owner, title="Alpha one"), make_session(owner, title="alpha two")]
    make_session(owner, title="Beta")
    make_session(owner, title="Alpha deleted", deleted=True)
    make_session(stranger, title="Alpha theirs")
    op = execute(owner, "close", filter={"search": "alpha", "status": "active"})
    assert sorted(op.items.values_list("session_id", flat=True)) == sorted(s.pk for s in mine)
    assert op.succeeded == 2


def test_filter_over_the_cap_reports_count_and_cap(owner, settings):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 5
    Session.objects.bulk_create(Session(id=f"f-{i}", owner=owner) for i in range(7))
    with pytest.raises(ValidationError) as info:
        operation_create(user=owner, action="close", selection=Selection(filter={}))
    assert "matches 7 sessions" in str(info.value) and "cap for close is 5" in str(info.value)
    assert not BulkOperation.objects.exists()


def test_export_filter_cap_is_the_export_cap(owner, settings):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 2
    settings.BULKOPS_MAX_EXPORT_SESSIONS = 4
    Session.objects.bulk_create(Session(id=f"f-{i}", owner=owner) for i in range(4))
    op = operation_create(user=owner, action="export", selection=Selection(filter={})).operation
    assert op.total == 4
    Session.objects.create(id="f-5", owner=owner)
    with pytest.raises(ValidationError, match="cap for export is 4"):
        operation_create(user=owner, action="export", selection=Selection(filter={}))


@pytest.mark.parametrize(
    "bad_filter",
    [
        {"colour": "red"},
        {"status": "open"},
        {"created_after": "yesterday"},
        {"deleted": "yes"},
        {"owner": {"id": 1}},
        "status=active",
    ],
)
def test_bad_filters_are_refused(owner, bad_filter):
    with pytest.raises(ValidationError):
        operation_validate(user=owner, action="close", selection=Selection(filter=bad_filter))


def test_filter_by_created_range(owner, make_session):
    old = make_session(owner, created_at=timezone.now() - datetime.timedelta(days=10))
    make_session(owner)
    result = operation_validate(
        user=owner,
        action="close",
        selection=Selection(
            filter={
                "created_before": (timezone.now() - datetime.timedelta(days=1)).date().isoformat()
            }
        ),
    )
    assert [e["session_id"] for e in result.eligible] == [old.pk]


# --- validate ----------------------------------------------------------------------------
def test_validate_partitions_every_id_and_changes_nothing(owner, stranger, make_session):
    ok = make_session(owner, title="Fine")
    closed = make_session(owner, status="closed")
    busy = make_session(owner, status="processing")
    theirs = make_session(stranger)
    before = snapshot()
    result = operation_validate(
        user=owner,
        action="close",
        selection=Selection(session_ids=[ok.pk, closed.pk, busy.pk, theirs.pk, "nope"]),
    ).as_dict()
    assert snapshot() == before
    assert not BulkOperation.objects.exists()
    assert result["eligible"] == [{"session_id": ok.pk, "title": "Fine", "status": "active"}]
    assert result["eligible_ids"] == [ok.pk]
    assert result["skipped"] == [{"session_id": closed.pk, "reason": "already_closed"}]
    assert [(i["session_id"], i["reason"]) for i in result["ineligible"]] == [
        (busy.pk, "processing"),
        (theirs.pk, "not_found"),
        ("nope", "not_found"),
    ]
    assert all(i["message"] for i in result["ineligible"])
    assert (result["eligible_count"], result["skipped_count"], result["ineligible_count"]) == (
        1,
        1,
        3,
    )
    assert result["estimated_duration_seconds"] > 0
    assert "cascade" not in result


def test_validate_delete_previews_cascade(owner, make_session):
    a, b = make_session(owner, exports=2), make_session(owner, exports=1)
    busy = make_session(owner, status="processing", exports=5)
    ids = [a.pk, b.pk, busy.pk]
    plain = operation_validate(user=owner, action="delete", selection=Selection(session_ids=ids))
    assert plain.as_dict()["cascade"] == {"exports": 0}
    cascade = operation_validate(
        user=owner,
        action="delete",
        selection=Selection(session_ids=ids),
        params={"cascade_exports": True},
    )
    assert cascade.as_dict()["cascade"] == {"exports": 3}


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("explode", {}),
        ("export", {"format": "xml"}),
        ("delete", {"soft_delete": "no"}),
        ("close", {"atomic": 1}),
    ],
)
def test_unknown_action_or_bad_params_are_refused(owner, make_session, action, params):
    s = make_session(owner)
    with pytest.raises(ValidationError):
        operation_create(
            user=owner, action=action, selection=Selection(session_ids=[s.pk]), params=params
        )
    assert not BulkOperation.objects.exists()


# --- create ----------------------------------------------------------------------------------
def test_create_makes_pending_items_and_enqueues_one_task(owner, make_session):
    from django_tasks_db.models import DBTaskResult

    sessions = [make_session(owner) for _ in range(3)]
    op = operation_create(
        user=owner,
        action="close",
        selection=Selection(session_ids=[s.pk for s in sessions]),
        reason="quarterly clean-up",
    ).operation
    assert op.pk.startswith("op-") and len(op.pk) > 20
    assert (op.status, op.total, op.reason, op.source) == (
        "pending",
        3,
        "quarterly clean-up",
        "api",
    )
    assert set(op.items.values_list("outcome", flat=True)) == {"pending"}
    task = DBTaskResult.objects.get()
    assert task.args_kwargs["kwargs"] == {"operation_id": op.pk}


def test_reason_longer_than_500_is_refused(owner, make_session):
    s = make_session(owner)
    operation_create(
        user=owner, action="close", selection=Selection(session_ids=[s.pk]), reason="x" * 500
    )
    with pytest.raises(ValidationError):
        operation_create(
            user=owner, action="close", selection=Selection(session_ids=[s.pk]), reason="x" * 501
        )
    assert BulkOperation.objects.count() == 1


def test_more_active_operations_than_the_limit_are_refused(owner, make_session, settings):
    settings.BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER = 2
    s = make_session(owner)
    for _ in range(2):
        operation_create(user=owner, action="close", selection=Selection(session_ids=[s.pk]))
    with pytest.raises(TooManyActiveOperations):
        operation_create(user=owner, action="close", selection=Selection(session_ids=[s.pk]))
    assert BulkOperation.objects.count() == 2
    run_worker()
    operation_create(user=owner, action="close", selection=Selection(session_ids=[s.pk]))


def test_the_cap_counts_the_users_pending_running_and_paused_operations_only(
    owner, stranger, settings
):
    settings.BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER = 3
    for user, status in [
        (owner, "pending"),
        (owner, "running"),
        (owner, "completed"),
        (owner, "failed"),
        (owner, "cancelled"),
        (stranger, "running"),
    ]:
        BulkOperation.objects.create(user=user, action="close", status=status)  # fmt: skip
    assert active_operations_count(user=owner) == 2
    assert active_operations_count(user=stranger) == 1
    BulkOperation.objects.create(user=owner, action="close", status="paused")
    assert active_operations_count(user=owner) == 3
    with pytest.raises(TooManyActiveOperations):
        operation_create(user=owner, action="close", selection=Selection(session_ids=["s"]))


def test_idempotency_key_replays_and_refuses_a_different_body(owner, make_session):
    s = make_session(owner)
    op = operation_create(
        user=owner,
        action="close",
        selection=Selection(session_ids=[s.pk]),
        idempotency_key="k1",
        fingerprint="f1",
    ).operation
    assert operation_replay(user=owner, idempotency_key="k1", fingerprint="f1") == op
    with pytest.raises(IdempotencyConflict):
        operation_replay(user=owner, idempotency_key="k1", fingerprint="other")
    assert operation_replay(user=owner, idempotency_key="k2", fingerprint="f1") is None


def test_idempotency_keys_expire_after_the_ttl(owner, make_session, settings):
    s = make_session(owner)
    op = operation_create(
        user=owner,
        action="close",
        selection=Selection(session_ids=[s.pk]),
        idempotency_key="k1",
        fingerprint="f1",
    ).operation
    BulkOperation.objects.filter(pk=op.pk).update(
        created_at=timezone.now()
        - datetime.timedelta(seconds=settings.BULKOPS_IDEMPOTENCY_TTL_SECONDS + 1)
    )
    assert operation_replay(user=owner, idempotency_key="k1", fingerprint="f1") is None
    again = operation_create(
        user=owner,
        action="close",
        selection=Selection(session_ids=[s.pk]),
        idempotency_key="k1",
        fingerprint="f1",
    ).operation
    assert again.pk != op.pk


# --- execute -----------------------------------------------------------------------------------
def test_chunks_commit_and_counters_add_up(owner, make_session, settings):
    settings.BULKOPS_CHUNK_SIZE = 3
    sessions = [make_session(owner) for _ in range(7)] + [make_session(owner, status="closed")]
    op = execute(owner, "close", [s.pk for s in sessions])
    assert (op.processed, op.succeeded, op.skipped) == (8, 7, 1)
    assert op.version >= 3 + 2  # a bump per chunk, plus start and finish
    assert op.started_at <= op.finished_at
    assert_counters_add_up(op)


def test_resume_after_interruption_never_applies_an_item_twice(
    owner, make_session, settings, monkeypatch
):
    settings.BULKOPS_CHUNK_SIZE = 2
    sessions = [make_session(owner) for _ in range(6)]
    ids = [s.pk for s in sessions]
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=ids)
    ).operation
    calls = {"n": 0}
    original = executor.record  # each chunk's last step, whichever way it applied

    def crash_on_second_chunk(operation, part, now):
        calls["n"] += 1
        original(operation, part, now)
        if calls["n"] == 2:
            raise SystemExit("worker killed")  # not an Exception: nothing catches it

    monkeypatch.setattr(executor, "record", crash_on_second_chunk)
    with pytest.raises(SystemExit):
        operation_execute(operation_id=op.pk)
    op.refresh_from_db()
    assert (op.status, op.processed, op.attempts) == ("running", 2, 1)
    first_chunk = dict(Session.objects.filter(status="closed").values_list("pk", "closed_at"))
    assert sorted(first_chunk) == ids[:2]  # the crashed chunk rolled back

    monkeypatch.setattr(executor, "record", original)
    operation_execute(operation_id=op.pk)
    op.refresh_from_db()
    assert (op.status, op.processed, op.succeeded, op.attempts) == ("completed", 6, 6, 2)
    for pk, closed_at in first_chunk.items():
        assert Session.objects.get(pk=pk).closed_at == closed_at  # not applied again
    assert_counters_add_up(op)


def test_running_a_finished_operation_again_changes_nothing(owner, make_session):
    s = make_session(owner)
    op = execute(owner, "close", [s.pk])
    version = op.version
    operation_execute(operation_id=op.pk)
    op.refresh_from_db()
    assert (op.status, op.succeeded, op.version) == ("completed", 1, version)


def test_operation_gives_up_after_max_attempts(owner, make_session, settings):
    settings.BULKOPS_MAX_ATTEMPTS = 2
    s = make_session(owner)
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=[s.pk])
    ).operation
    BulkOperation.objects.filter(pk=op.pk).update(status="running", attempts=2)
    operation_execute(operation_id=op.pk)
    op.refresh_from_db()
    assert op.status == "failed"
    assert "Gave up after 2 attempts" in op.error
    assert outcomes(op) == {s.pk: ("failed", "internal_error")}
    assert Session.objects.get(pk=s.pk).status == "active"


def test_internal_error_fails_the_rest_and_keeps_committed_chunks(
    owner, make_session, settings, monkeypatch
):
    settings.BULKOPS_CHUNK_SIZE = 2
    ids = [make_session(owner).pk for _ in range(4)]
    original = executor.record
    calls = {"n": 0}

    def boom_on_second(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        original(*args)

    monkeypatch.setattr(executor, "record", boom_on_second)
    op = execute(owner, "close", ids)
    assert op.status == "failed"  # a fatal error fails the operation (DESIGN §3) …
    assert "Internal error (RuntimeError: disk on fire)" in op.error  # the real cause
    # … but what committed before it stays, and the rest say why they were not done.
    assert (
        sorted(outcomes(op).values())
        == [("failed", "internal_error")] * 2 + [("succeeded", "")] * 2
    )
    assert Session.objects.filter(status="closed").count() == 2
    assert_counters_add_up(op)


# --- cancel, timeout, retry ----------------------------------------------------------------------
def test_cancel_pending_operation_cancels_every_item_and_touches_nothing(owner, make_session):
    ids = [make_session(owner).pk for _ in range(3)]
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=ids)
    ).operation
    operation_cancel(operation=op)
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.cancelled, op.processed) == ("cancelled", 3, 3)
    assert Session.objects.filter(status="closed").count() == 0
    with pytest.raises(OperationConflict):
        operation_cancel(operation=op)


def test_cancel_running_operation_stops_at_next_chunk(owner, make_session, settings, monkeypatch):
    settings.BULKOPS_CHUNK_SIZE = 2
    ids = [make_session(owner).pk for _ in range(6)]
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=ids)
    ).operation
    original = executor.record

    def cancel_during_first_chunk(operation, part, now):
        original(operation, part, now)
        BulkOperation.objects.filter(pk=operation.pk).update(cancel_requested=True)

    monkeypatch.setattr(executor, "record", cancel_during_first_chunk)
    operation_execute(operation_id=op.pk)
    op.refresh_from_db()
    assert (op.status, op.succeeded, op.cancelled) == ("cancelled", 2, 4)
    assert {r for _, r in outcomes(op).values()} == {"", "cancelled"}
    assert Session.objects.filter(status="closed").count() == 2
    assert_counters_add_up(op)


def test_operation_past_the_timeout_stops_with_reason_timeout(owner, make_session, settings):
    settings.BULKOPS_OPERATION_TIMEOUT_SECONDS = 60
    ids = [make_session(owner).pk for _ in range(2)]
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=ids)
    ).operation
    BulkOperation.objects.filter(pk=op.pk).update(
        status="running", attempts=1, started_at=timezone.now() - datetime.timedelta(seconds=61)
    )
    operation_execute(operation_id=op.pk)
    op.refresh_from_db()
    assert op.status == "cancelled"
    assert op.error.startswith("timeout")
    assert outcomes(op) == {i: ("cancelled", "timeout") for i in ids}
    assert Session.objects.filter(status="closed").count() == 0


def test_retry_runs_only_the_failed_items_again(owner, make_session):
    ok = make_session(owner)
    busy = make_session(owner, status="processing")
    op = execute(owner, "close", [ok.pk, busy.pk, "missing"])
    assert op.status == "partial"
    Session.objects.filter(pk=busy.pk).update(status="active")
    retry = operation_retry(operation=op, user=owner).operation
    assert list(retry.items.values_list("session_id", flat=True)) == [busy.pk]
    run_worker()
    retry.refresh_from_db()
    assert retry.status == "completed"
    assert Session.objects.get(pk=busy.pk).status == "closed"


def test_retry_refuses_running_or_clean_operations(owner, make_session):
    s = make_session(owner)
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=[s.pk])
    ).operation
    with pytest.raises(OperationConflict, match="still running"):
        operation_retry(operation=op, user=owner)
    run_worker()
    op.refresh_from_db()
    with pytest.raises(OperationConflict, match="Nothing to retry"):
        operation_retry(operation=op, user=owner)


# --- input edges found by schemathesis through the API (the admin and CLI share them) ---
@pytest.mark.parametrize(
    "bad_filter",
    [
        # str.isdigit() is true for superscripts, int() is not; and a username is ASCII
        # (the one owner rule, engine.inputs): refused, as the API refuses it.
        {"owner": "²"},
        {"created_after": "2024-02-30"},  # well-formed, impossible
        {"search": "a\x00b"},
    ],
)
def test_filter_edges_are_refused_cleanly(owner, bad_filter):
    with pytest.raises(ValidationError):
        operation_validate(user=owner, action="close", selection=Selection(filter=bad_filter))
    with pytest.raises(ValidationError):
        operation_create(user=owner, action="close", selection=Selection(filter=bad_filter))
    assert not BulkOperation.objects.exists()


def test_far_offsets_are_normalised_to_utc(owner, make_session):
    s = make_session(owner, created_at=timezone.now() - datetime.timedelta(days=3))
    result = operation_validate(
        user=owner,
        action="close",
        selection=Selection(filter={"created_before": "2999-01-01T00:00:00+20:07"}),
    )
    assert [e["session_id"] for e in result.eligible] == [s.pk]


def test_trailing_newline_in_an_id_is_malformed(owner):
    with pytest.raises(ValidationError, match="Malformed"):
        operation_create(user=owner, action="close", selection=Selection(session_ids=["abc\n"]))
    from bulkops.models import session_id_validator

    with pytest.raises(ValidationError):
        session_id_validator("abc\n")


def test_nul_in_reason_is_refused(owner, make_session):
    s = make_session(owner)
    with pytest.raises(ValidationError):
        operation_create(
            user=owner, action="close", selection=Selection(session_ids=[s.pk]), reason="a\x00"
        )
    assert not BulkOperation.objects.exists()


def test_succeeded_items_keep_the_status_their_session_had_before(owner, make_session):
    make_session(owner, id="was-active")
    make_session(owner, id="was-closed", status="closed")
    make_session(owner, id="was-processing", status="processing")
    op = execute(owner, "archive", ["was-active", "was-closed", "was-processing"])
    previous = dict(op.items.values_list("session_id", "previous_status"))
    assert previous == {"was-active": "active", "was-closed": "closed", "was-processing": ""}
    assert outcomes(op)["was-processing"] == ("failed", "processing")
