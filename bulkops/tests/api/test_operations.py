"""GET/POST /api/bulk/operations/…: list, detail with items, status, cancel, retry;
someone else's operation is a 404 exactly like a missing one."""

from __future__ import annotations

import pytest

from bulkops.models import BulkOperation, Session
from bulkops.tests.support import api as support
from bulkops.tests.support.api import ACTION_PATHS, post_json, token_client
from bulkops.tests.support.helpers import run_worker

pytestmark = pytest.mark.django_db
api = support.api
fast_password_hasher = support.fast_password_hasher


def start(api, action: str, ids: list[str], **params) -> str:
    response = post_json(api, ACTION_PATHS[action], {"session_ids": ids, **params})
    assert response.status_code == 202, response.content
    return response.json()["operation_id"]


def test_list_is_the_callers_operations_newest_first(api, owner, stranger, make_session):
    s = make_session(owner)
    first = start(api, "close", [s.pk])
    second = start(api, "archive", [s.pk])
    start(token_client(stranger), "close", ["whatever"])
    for path in ("/api/bulk/operations/", "/api/bulk/operations"):
        data = api.get(path).json()
        assert data["count"] == 2
        assert [o["operation_id"] for o in data["results"]] == [second, first]


def test_status_and_detail_with_items_filtered_by_outcome(api, owner, make_session):
    ok = make_session(owner)
    op_id = start(api, "close", [ok.pk, "missing-1", "missing-2"])
    run_worker()
    status = api.get(f"/api/bulk/operations/{op_id}/status").json()
    assert (status["status"], status["succeeded"], status["failed"]) == ("partial", 1, 2)
    assert {e["session_id"] for e in status["errors"]} == {"missing-1", "missing-2"}
    assert api.get(f"/api/bulk/operations/{op_id}/status/").status_code == 200

    detail = api.get(f"/api/bulk/operations/{op_id}/?outcome=failed&page_size=1").json()
    assert detail["operation_id"] == op_id
    assert detail["items"]["count"] == 2
    assert detail["items"]["results"] == [
        {
            "session_id": "missing-1",
            "outcome": "failed",
            "reason": "not_found",
            "message": "No such session.",
        }
    ]
    assert api.get(f"/api/bulk/operations/{op_id}").status_code == 200

    items = api.get(f"/api/bulk/operations/{op_id}/items?outcome=succeeded").json()
    assert [i["session_id"] for i in items["results"]] == [ok.pk]
    assert api.get(f"/api/bulk/operations/{op_id}/items/").json()["count"] == 3
    assert api.get(f"/api/bulk/operations/{op_id}/items?outcome=weird").status_code == 400
    assert api.get(f"/api/bulk/operations/{op_id}/items?page_size=0").status_code == 400
    assert api.get(f"/api/bulk/operations/{op_id}/items?page=9").status_code == 404


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", "/"),
        ("get", "/status"),
        ("get", "/items"),
        ("post", "/cancel"),
        ("post", "/retry"),
        ("post", "/pause"),
        ("post", "/resume"),
    ],
)
def test_someone_elses_or_unknown_operation_is_404(api, stranger, make_session, method, suffix):
    theirs = start(token_client(stranger), "close", [make_session(stranger).pk])
    before = BulkOperation.objects.values().get(pk=theirs)
    for op_id in (theirs, "op-" + "0" * 32, "../../etc"):
        response = getattr(api, method)(f"/api/bulk/operations/{op_id}{suffix}")
        assert response.status_code == 404
    assert BulkOperation.objects.values().get(pk=theirs) == before
    assert BulkOperation.objects.count() == 1


def test_cancel_a_pending_operation(api, owner, make_session):
    s = make_session(owner)
    op_id = start(api, "close", [s.pk])
    response = api.post(f"/api/bulk/operations/{op_id}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response["Location"] == f"/api/bulk/operations/{op_id}/status"
    run_worker()
    assert BulkOperation.objects.get(pk=op_id).cancelled == 1
    assert Session.objects.get(pk=s.pk).status == "active"
    again = api.post(f"/api/bulk/operations/{op_id}/cancel")
    assert again.status_code == 409
    assert "already finished" in again.json()["detail"]


def test_retry_runs_the_failed_items_again(api, owner, make_session):
    s = make_session(owner, status="processing")
    op_id = start(api, "close", [s.pk])
    assert api.post(f"/api/bulk/operations/{op_id}/retry").status_code == 409  # still pending
    run_worker()
    Session.objects.filter(pk=s.pk).update(status="active")
    response = api.post(f"/api/bulk/operations/{op_id}/retry", HTTP_IDEMPOTENCY_KEY="retry-1")
    assert response.status_code == 202
    new_id = response.json()["operation_id"]
    assert new_id != op_id and response["Location"].endswith(f"{new_id}/status")
    replay = api.post(f"/api/bulk/operations/{op_id}/retry", HTTP_IDEMPOTENCY_KEY="retry-1")
    assert replay.json()["operation_id"] == new_id
    assert BulkOperation.objects.count() == 2
    run_worker()
    assert Session.objects.get(pk=s.pk).status == "closed"
    assert BulkOperation.objects.get(pk=new_id).reason == f"Retry of {op_id}"


def test_retry_with_nothing_failed_is_409(api, owner, make_session):
    op_id = start(api, "close", [make_session(owner).pk])
    run_worker()
    response = api.post(f"/api/bulk/operations/{op_id}/retry")
    assert response.status_code == 409
    assert BulkOperation.objects.count() == 1


def failed_operation(api, owner, make_session) -> str:
    """A finished close whose one item failed (processing), now retryable."""
    s = make_session(owner, status="processing")
    op_id = start(api, "close", [s.pk])
    run_worker()
    Session.objects.filter(pk=s.pk).update(status="active")
    return op_id


@pytest.mark.parametrize("verb", ["retry", "cancel"])
@pytest.mark.parametrize(
    "body",
    [{"session_ids": ["s-1"]}, {"reason": "because"}, {"atomic": True}, [], "x", None],
    ids=["session_ids", "reason", "atomic", "list", "string", "null"],
)
def test_cancel_and_retry_refuse_a_body_and_change_nothing(api, owner, make_session, verb, body):
    """They take no parameters: a body that says something (a client believing it narrows
    the retry to some sessions) is a 400, not silently ignored."""
    op_id = failed_operation(api, owner, make_session)
    before = BulkOperation.objects.values().get(pk=op_id)
    response = post_json(api, f"/api/bulk/operations/{op_id}/{verb}", body)
    assert response.status_code == 400, response.content
    assert BulkOperation.objects.count() == 1
    assert BulkOperation.objects.values().get(pk=op_id) == before


@pytest.mark.parametrize("body", [{}, "absent"])
def test_retry_accepts_no_body_or_an_empty_object(api, owner, make_session, body):
    op_id = failed_operation(api, owner, make_session)
    path = f"/api/bulk/operations/{op_id}/retry"
    response = api.post(path) if body == "absent" else post_json(api, path, body)
    assert response.status_code == 202, response.content
    assert BulkOperation.objects.filter(reason=f"Retry of {op_id}").count() == 1


def test_cancel_refuses_a_body_that_is_not_json(api, owner, make_session):
    op_id = start(api, "close", [make_session(owner).pk])
    response = api.post(f"/api/bulk/operations/{op_id}/cancel", "a=1", content_type="text/plain")
    assert response.status_code == 415
    assert BulkOperation.objects.get(pk=op_id).status == "pending"
