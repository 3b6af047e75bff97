"""POST /api/bulk/operations/{id}/undo: 202 and a new ``undo`` operation, or a 409 that
says why and changes nothing."""

from __future__ import annotations

import datetime
from unittest import mock

import pytest
from django.db.models import F
from django.utils import timezone

from bulkops.models import BulkOperation, Session, SessionExport
from bulkops.tests.support.api import (
    ACTION_PATHS,
    VALIDATE,
    assert_nothing_happened,
    post_json,
    snapshot,
    token_client,
)
from bulkops.tests.support.helpers import execute, outcomes, run_worker

pytestmark = pytest.mark.django_db

WEEK = 7 * 24 * 3600


def undo_path(op_id: str) -> str:
    return f"/api/bulk/operations/{op_id}/undo"


def refused(api, op: BulkOperation, needle: str) -> None:
    """409 naming ``needle``; no session and no operation changed or appeared."""
    before, count = snapshot(), BulkOperation.objects.count()
    response = api.post(undo_path(op.pk))
    assert response.status_code == 409, response.content
    assert needle in response.json()["detail"]
    assert_nothing_happened(before, operations=count)


def test_undo_answers_202_with_a_new_undo_operation_over_the_succeeded_items(
    api, owner, make_session
):
    good, bad = make_session(owner).pk, make_session(owner, status="processing").pk
    op = execute(owner, "close", [good, bad])
    response = api.post(undo_path(op.pk))
    assert response.status_code == 202, response.content
    body = response.json()
    new = BulkOperation.objects.get(pk=body["operation_id"])
    assert (body["action"], body["status"], body["total"]) == ("undo", "pending", 1)
    assert response["Location"] == body["status_url"]
    assert (new.action, new.params, new.source, new.user) == (
        "undo",
        {"undoes": op.pk},
        "api",
        owner,
    )
    assert list(new.items.values_list("session_id", flat=True)) == [good]
    run_worker()
    assert Session.objects.get(pk=good).status == "active"
    status = api.get(f"/api/bulk/operations/{new.pk}/status").json()
    assert (status["action"], status["status"], status["succeeded"]) == ("undo", "completed", 1)


@pytest.mark.parametrize(
    ("action", "params", "needle"),
    [
        ("delete", {"soft_delete": False}, "hard delete cannot be undone"),
        ("export", {"format": "csv"}, "cannot be undone"),
    ],
)
def test_hard_delete_and_export_cannot_be_undone(
    api, owner, make_user, make_session, action, params, needle
):
    user = (
        make_user("hard", perms=("bulkops.hard_delete_session",)) if action == "delete" else owner
    )
    op = execute(user, action, [make_session(user).pk], **params)
    assert op.succeeded == 1
    refused(token_client(user), op, needle)


def test_a_soft_delete_that_removed_exports_cannot_be_undone(api, owner, make_session):
    """Its exports are gone: an undo that said ``completed`` would leave them missing."""
    sessions = [make_session(owner, exports=1) for _ in range(6)]
    op = execute(owner, "delete", [s.pk for s in sessions], cascade_exports=True)
    assert (op.succeeded, SessionExport.objects.count()) == (6, 0)
    refused(api, op, "exports were removed with them")
    assert Session.objects.filter(deleted_at__isnull=True).count() == 0


def test_a_soft_delete_that_kept_the_exports_is_undone_with_them(api, owner, make_session):
    sessions = [make_session(owner, exports=1) for _ in range(3)]
    op = execute(owner, "delete", [s.pk for s in sessions])
    assert api.post(undo_path(op.pk)).status_code == 202
    run_worker()
    assert Session.objects.filter(deleted_at__isnull=True).count() == 3
    assert SessionExport.objects.count() == 3


def test_an_undo_cannot_be_undone(api, owner, make_session):
    op = execute(owner, "close", [make_session(owner).pk])
    undo_id = api.post(undo_path(op.pk)).json()["operation_id"]
    run_worker()
    refused(api, BulkOperation.objects.get(pk=undo_id), "An undo cannot be undone")


def test_an_operation_not_finished_cannot_be_undone(api, owner, make_session):
    s = make_session(owner)
    response = post_json(api, ACTION_PATHS["close"], {"session_ids": [s.pk]})
    op = BulkOperation.objects.get(pk=response.json()["operation_id"])
    refused(api, op, "still pending")


def test_an_operation_is_undone_once(api, owner, make_session):
    op = execute(owner, "close", [make_session(owner).pk])
    first = api.post(undo_path(op.pk)).json()["operation_id"]
    refused(api, op, f"already undone by {first}")  # pending undo
    run_worker()
    refused(api, op, f"already undone by {first}")  # completed undo


def test_after_a_cancelled_undo_it_may_be_undone_again(api, owner, make_session):
    op = execute(owner, "close", [make_session(owner).pk])
    first = api.post(undo_path(op.pk)).json()["operation_id"]
    assert api.post(f"/api/bulk/operations/{first}/cancel").status_code == 202
    response = api.post(undo_path(op.pk))
    assert response.status_code == 202
    run_worker()
    assert Session.objects.get().status == "active"


def test_nothing_succeeded_is_409(api, owner, make_session):
    op = execute(owner, "close", [make_session(owner, status="closed").pk])
    assert op.skipped == 1
    refused(api, op, "no item of this operation succeeded")


@pytest.mark.parametrize(
    ("offset", "allowed"),
    [
        (datetime.timedelta(microseconds=-1), True),  # the last moment inside the window
        (datetime.timedelta(0), False),  # at the edge: expired
        (datetime.timedelta(microseconds=1), False),
        (datetime.timedelta(days=1), False),
    ],
)
def test_the_undo_window_is_measured_from_finished_at(api, owner, make_session, offset, allowed):
    op = execute(owner, "close", [make_session(owner).pk])
    moment = op.finished_at + datetime.timedelta(seconds=WEEK) + offset
    with mock.patch("bulkops.engine.undo.timezone.now", return_value=moment):
        if allowed:
            assert api.post(undo_path(op.pk)).status_code == 202
        else:
            refused(api, op, "undo window has passed")


def test_the_undo_window_is_a_setting(api, owner, make_session, settings):
    settings.BULKOPS_UNDO_WINDOW_SECONDS = 60
    assert api.get("/api/bulk/sessions/info").json()["limits"]["undo_window_seconds"] == 60
    op = execute(owner, "close", [make_session(owner).pk])
    BulkOperation.objects.filter(pk=op.pk).update(
        finished_at=timezone.now() - datetime.timedelta(seconds=61)
    )
    refused(api, op, "60 s (BULKOPS_UNDO_WINDOW_SECONDS)")


def test_someone_elses_operation_is_404_like_a_missing_one(api, stranger, make_session):
    theirs = execute(stranger, "close", [make_session(stranger).pk])
    before = snapshot()
    response = api.post(undo_path(theirs.pk))
    missing = api.post(undo_path("op-" + "0" * 32))
    assert response.status_code == missing.status_code == 404
    assert response.json() == missing.json()
    assert_nothing_happened(before, operations=1)
    assert Session.objects.get().status == "closed"


def test_idempotency_key_replays_the_same_undo(api, owner, make_session):
    op = execute(owner, "close", [make_session(owner).pk])
    first = api.post(undo_path(op.pk), HTTP_IDEMPOTENCY_KEY="undo-1")
    again = api.post(undo_path(op.pk), HTTP_IDEMPOTENCY_KEY="undo-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["operation_id"] == again.json()["operation_id"]
    assert BulkOperation.objects.filter(action="undo").count() == 1


def test_undo_is_rate_limited_on_its_own_scope(api, owner, make_session, settings):
    settings.BULKOPS_RATE_LIMITS = {"undo": "1/m"}
    first = execute(owner, "close", [make_session(owner).pk])
    second = execute(owner, "close", [make_session(owner).pk])
    assert api.post(undo_path(first.pk)).status_code == 202
    response = api.post(undo_path(second.pk))
    assert response.status_code == 429
    assert BulkOperation.objects.filter(action="undo").count() == 1


def test_undo_is_not_a_session_action(api, owner, make_session):
    s = make_session(owner)
    assert post_json(api, "/api/bulk/sessions/undo", {"session_ids": [s.pk]}).status_code == 404
    response = post_json(api, VALIDATE, {"action": "undo", "session_ids": [s.pk]})
    assert response.status_code == 400
    assert not BulkOperation.objects.exists()


def test_a_changed_session_fails_in_the_undo_with_its_reason(api, owner, make_session):
    changed, fine = make_session(owner).pk, make_session(owner).pk
    op = execute(owner, "close", [changed, fine])
    Session.objects.filter(pk=changed).update(status="processing")
    new_id = api.post(undo_path(op.pk)).json()["operation_id"]
    run_worker()
    new = BulkOperation.objects.get(pk=new_id)
    assert outcomes(new) == {changed: ("failed", "processing"), fine: ("succeeded", "")}
    errors = api.get(f"/api/bulk/operations/{new_id}/status").json()["errors"]
    assert errors == [
        {
            "session_id": changed,
            "reason": "processing",
            "message": "A pipeline is working on this session; try again when it is done.",
        }
    ]


def test_an_undo_item_that_failed_processing_is_taken_back_by_a_retry(api, owner, make_session):
    busy = make_session(owner).pk
    op = execute(owner, "close", [busy])
    Session.objects.filter(pk=busy).update(status="processing")  # a pipeline took it
    undo_id = api.post(undo_path(op.pk)).json()["operation_id"]
    run_worker()
    assert outcomes(BulkOperation.objects.get(pk=undo_id)) == {busy: ("failed", "processing")}
    Session.objects.filter(pk=busy).update(status="closed")  # the pipeline is done
    retry = api.post(f"/api/bulk/operations/{undo_id}/retry")
    assert retry.status_code == 202 and retry.json()["action"] == "undo"
    run_worker()
    assert Session.objects.get(pk=busy).status == "active"


# --- an undo outlives the operation it undid ----------------------------------------------------
@pytest.fixture
def partial_undo(api, owner, make_session, settings):
    """Four sessions closed; one taken by a pipeline; the undo (partial: one item
    failed ``processing``); then the pipeline is done and the close is past retention."""
    settings.BULKOPS_OPERATION_RETENTION_DAYS = 30
    ids = [make_session(owner).pk for _ in range(4)]
    closed = execute(owner, "close", ids)
    Session.objects.filter(pk=ids[0]).update(status="processing")
    undo_id = api.post(undo_path(closed.pk)).json()["operation_id"]
    run_worker()
    undo = BulkOperation.objects.get(pk=undo_id)
    assert (undo.status, undo.succeeded, undo.failed) == ("partial", 3, 1)
    Session.objects.filter(pk=ids[0]).update(status="closed")
    # 31 days pass for the close (the undo, run later, is within retention still).
    ago = datetime.timedelta(days=31)
    BulkOperation.objects.filter(pk=closed.pk).update(
        created_at=F("created_at") - ago,
        started_at=F("started_at") - ago,
        finished_at=F("finished_at") - ago,
    )
    Session.objects.filter(pk=ids[0]).update(closed_at=F("closed_at") - ago)
    return {"closed": closed, "undo": undo, "busy": ids[0]}


def test_cleanup_keeps_an_undone_operation_while_its_undo_is_kept(api, partial_undo):
    from django.core.management import call_command

    call_command("bulkops_cleanup", verbosity=0)
    assert BulkOperation.objects.filter(pk=partial_undo["closed"].pk).exists()
    retry = api.post(f"/api/bulk/operations/{partial_undo['undo'].pk}/retry")
    assert retry.status_code == 202, retry.content
    assert retry.json()["action"] == "undo" and retry.json()["total"] == 1
    run_worker()
    assert Session.objects.get(pk=partial_undo["busy"]).status == "active"


def test_retrying_an_undo_whose_undone_operation_is_gone_is_a_409(api, partial_undo):
    """However the undone operation went (its owner deleted, say), the retry says why."""
    BulkOperation.objects.filter(pk=partial_undo["closed"].pk).delete()
    before, count = snapshot(), BulkOperation.objects.count()
    response = api.post(f"/api/bulk/operations/{partial_undo['undo'].pk}/retry")
    assert response.status_code == 409, response.content
    assert partial_undo["closed"].pk in response.json()["detail"]
    assert "no longer exists" in response.json()["detail"]
    assert_nothing_happened(before, operations=count)
