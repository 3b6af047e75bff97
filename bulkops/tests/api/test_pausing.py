"""POST /api/bulk/operations/{id}/pause and /resume, and ``max_failures`` on every action
body (issue 10 §4)."""

from __future__ import annotations

import pytest

from bulkops import events
from bulkops.models import BulkOperation, Session
from bulkops.tests.support import api as support
from bulkops.tests.support.api import ACTION_PATHS, post_json, token_client
from bulkops.tests.support.helpers import outcomes, run_worker

pytestmark = pytest.mark.django_db
api = support.api
fast_password_hasher = support.fast_password_hasher


@pytest.fixture
def published(monkeypatch):
    """Every event published, in order (the channel layer is bypassed)."""
    seen: list[dict] = []
    monkeypatch.setattr(events, "_send", lambda groups, message: seen.append(message["event"]))
    return seen


def start(api, ids: list[str], **body) -> str:
    response = post_json(api, ACTION_PATHS["close"], {"session_ids": ids, **body})
    assert response.status_code == 202, response.content
    return response.json()["operation_id"]


def pause(api, op_id: str):
    return api.post(f"/api/bulk/operations/{op_id}/pause")


def resume(api, op_id: str):
    return api.post(f"/api/bulk/operations/{op_id}/resume")


def test_pause_and_resume_answer_202_with_the_operation_and_send_their_events(
    api, owner, make_session, published, django_capture_on_commit_callbacks
):
    ids = [make_session(owner).pk for _ in range(3)]
    op_id = start(api, ids)
    with django_capture_on_commit_callbacks(execute=True):
        paused = pause(api, op_id)
    assert paused.status_code == 202, paused.content
    assert paused["Location"] == f"/api/bulk/operations/{op_id}/status"
    body = paused.json()
    assert (body["operation_id"], body["status"], body["eta_seconds"]) == (op_id, "paused", None)
    assert body["paused_at"] is not None
    row = BulkOperation.objects.get(pk=op_id)
    assert (row.status, row.version) == ("paused", body["version"])
    assert row.paused_at is not None
    assert published[-1]["type"] == "bulk_operation_paused"
    assert (published[-1]["operation_id"], published[-1]["status"]) == (op_id, "paused")
    assert published[-1]["version"] == body["version"]

    with django_capture_on_commit_callbacks(execute=True):
        resumed = resume(api, op_id)
    assert resumed.status_code == 202, resumed.content
    assert (resumed.json()["status"], resumed.json()["paused_at"]) == ("pending", None)
    row = BulkOperation.objects.get(pk=op_id)
    assert (row.status, row.paused_at) == ("pending", None)
    assert Session.objects.filter(pk__in=ids, status="active").count() == 3  # not run yet
    assert published[-1]["type"] == "bulk_operation_resumed"
    assert published[-1]["status"] == "pending"
    run_worker()  # resumed means queued again: the worker finishes it
    status = api.get(f"/api/bulk/operations/{op_id}/status").json()
    assert (status["status"], status["succeeded"]) == ("completed", 3)
    assert outcomes(BulkOperation.objects.get(pk=op_id)) == dict.fromkeys(ids, ("succeeded", ""))
    assert Session.objects.filter(pk__in=ids, status="closed").count() == 3


def test_pausing_a_running_operation_answers_pause_requested(api, owner, make_session):
    op_id = start(api, [make_session(owner).pk])
    BulkOperation.objects.filter(pk=op_id).update(status="running")
    response = pause(api, op_id)
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["pause_requested"]) == ("running", True)
    assert BulkOperation.objects.get(pk=op_id).pause_requested


@pytest.mark.parametrize(
    ("status", "call", "detail"),
    [
        ("completed", pause, "already finished"),
        ("paused", pause, "already paused"),
        ("pending", resume, "Only a paused operation can be resumed; this one is pending."),
        ("running", resume, "this one is running"),
        ("cancelled", resume, "this one is cancelled"),
    ],
)
def test_wrong_states_are_409_with_a_clear_detail_and_change_nothing(
    api, owner, make_session, status, call, detail
):
    op_id = start(api, [make_session(owner).pk])
    BulkOperation.objects.filter(pk=op_id).update(status=status)
    before = BulkOperation.objects.values().get(pk=op_id)
    response = call(api, op_id)
    assert response.status_code == 409
    assert detail in response.json()["detail"]
    assert BulkOperation.objects.values().get(pk=op_id) == before


@pytest.mark.parametrize("call", [pause, resume])
def test_someone_elses_operation_is_404_like_a_missing_one(api, stranger, make_session, call):
    theirs = start(token_client(stranger), [make_session(stranger).pk])
    if call is resume:
        BulkOperation.objects.filter(pk=theirs).update(status="paused")
    before = BulkOperation.objects.values().get(pk=theirs)
    answers = [call(api, op_id) for op_id in (theirs, "op-" + "0" * 32)]
    assert [r.status_code for r in answers] == [404, 404]
    assert answers[0].json() == answers[1].json()
    assert BulkOperation.objects.values().get(pk=theirs) == before


def test_cancel_of_a_paused_operation_cancels_it_at_once(api, owner, make_session):
    ids = [make_session(owner).pk for _ in range(2)]
    op_id = start(api, ids)
    assert pause(api, op_id).status_code == 202
    response = api.post(f"/api/bulk/operations/{op_id}/cancel")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["cancelled"]) == ("cancelled", 2)
    op = BulkOperation.objects.get(pk=op_id)
    assert (op.status, op.processed, op.cancelled) == ("cancelled", 2, 2)
    assert op.finished_at is not None
    assert outcomes(op) == dict.fromkeys(ids, ("cancelled", "cancelled"))
    assert Session.objects.filter(pk__in=ids, status="active").count() == 2


# --- max_failures --------------------------------------------------------------------------
@pytest.mark.parametrize("action", sorted(ACTION_PATHS))
def test_every_action_takes_max_failures_and_keeps_it_in_params(api, owner, make_session, action):
    sid = make_session(owner, deleted=action == "restore").pk
    body = {"session_ids": [sid], "max_failures": 0}
    response = post_json(api, ACTION_PATHS[action], body)
    assert response.status_code == 202, response.content
    op = BulkOperation.objects.get(pk=response.json()["operation_id"])
    assert op.params["max_failures"] == 0


def test_max_failures_zero_stops_at_the_first_failure(api, owner, make_session, settings):
    settings.BULKOPS_CHUNK_SIZE = 1
    ok = make_session(owner, id="b-ok").pk
    op_id = start(api, ["a-missing", ok], max_failures=0)
    run_worker()
    status = api.get(f"/api/bulk/operations/{op_id}/status").json()
    assert (status["status"], status["failed"], status["cancelled"]) == ("failed", 1, 1)
    assert "failure threshold" in status["error"]
    op = BulkOperation.objects.get(pk=op_id)
    assert outcomes(op) == {
        "a-missing": ("failed", "not_found"),
        ok: ("cancelled", "failure_threshold"),
    }
    assert Session.objects.get(pk=ok).status == "active"


@pytest.mark.parametrize("bad", [-1, True, "3", 2.5, None, 10**7, [1], {"n": 1}])
def test_bad_max_failures_is_400_and_creates_nothing(api, owner, make_session, bad):
    body = {"session_ids": [make_session(owner).pk], "max_failures": bad}
    response = post_json(api, ACTION_PATHS["close"], body)
    assert response.status_code == 400
    assert "max_failures" in response.json()
    assert not BulkOperation.objects.exists()


def test_max_failures_is_not_a_validate_field(api, owner, make_session):
    body = {"action": "close", "session_ids": [make_session(owner).pk], "max_failures": 1}
    response = post_json(api, "/api/bulk/sessions/validate", body)
    assert response.status_code == 400
    assert "max_failures" in response.json()
