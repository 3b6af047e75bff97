"""POST /api/bulk/sessions/{delete,close,archive,restore,export-metadata}: the happy path
changes the database as promised; every bad input is a 4xx that changes nothing."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from bulkops.exports.storage import export_path
from bulkops.models import BulkOperation, BulkOperationItem, Session, SessionExport
from bulkops.tests.support import api as support
from bulkops.tests.support.api import (
    ACTION_PATHS,
    assert_nothing_happened,
    post_json,
    snapshot,
    token_client,
)
from bulkops.tests.support.helpers import run_worker

pytestmark = pytest.mark.django_db
api = support.api
fast_password_hasher = support.fast_password_hasher


def start(api: APIClient, action: str, body: dict, **extra) -> BulkOperation:
    response = post_json(api, ACTION_PATHS[action], body, **extra)
    assert response.status_code == 202, response.content
    data = response.json()
    assert response["Location"] == data["status_url"]
    assert data["status_url"] == f"/api/bulk/operations/{data['operation_id']}/status"
    assert data["success"] is True and data["status"] == "pending" and data["action"] == action
    return BulkOperation.objects.get(pk=data["operation_id"])


# --- happy paths ---------------------------------------------------------------------------
def test_close_closes_own_sessions_after_the_worker_ran(api, owner, make_session):
    a, b = make_session(owner), make_session(owner, status="closed")
    op = start(api, "close", {"session_ids": [a.pk, b.pk], "reason": "quarter end"})
    assert (op.total, op.source, op.reason) == (2, "api", "quarter end")
    run_worker()
    a.refresh_from_db()
    assert a.status == "closed" and a.closed_at is not None
    op.refresh_from_db()
    assert (op.status, op.succeeded, op.skipped) == ("completed", 1, 1)
    status = api.get(f"/api/bulk/operations/{op.pk}/status").json()
    assert (status["status"], status["progress"], status["processed"]) == ("completed", 100, 2)


def test_archive_compresses_content(api, owner, make_session):
    s = make_session(owner, content="x" * 5000)
    op = start(api, "archive", {"session_ids": [s.pk]})
    run_worker()
    s.refresh_from_db()
    assert (s.status, s.content) == ("archived", "")
    assert s.archive_original_size == 5000 and s.archive_blob
    assert BulkOperation.objects.get(pk=op.pk).status == "completed"


def test_soft_delete_with_cascade_removes_exports(api, owner, make_session):
    s = make_session(owner, exports=2)
    keep = make_session(owner, exports=1)
    start(api, "delete", {"session_ids": [s.pk], "cascade_exports": True})
    run_worker()
    s.refresh_from_db()
    assert s.deleted_at is not None
    assert not SessionExport.objects.filter(session=s).exists()
    assert SessionExport.objects.filter(session=keep).count() == 1


def test_hard_delete_without_permission_fails_items_and_keeps_rows(api, owner, make_session):
    s = make_session(owner)
    op = start(api, "delete", {"session_ids": [s.pk], "soft_delete": False})
    run_worker()
    op.refresh_from_db()
    assert op.status == "failed"
    assert op.items.get().reason == "permission_denied"
    assert Session.objects.filter(pk=s.pk, deleted_at__isnull=True).exists()


def test_restore_by_filter_undeletes(api, owner, make_session):
    gone = [make_session(owner, deleted=True) for _ in range(3)]
    live = make_session(owner)
    op = start(api, "restore", {"filter": {}})
    assert op.total == 3
    run_worker()
    assert not Session.objects.filter(
        pk__in=[s.pk for s in gone], deleted_at__isnull=False
    ).exists()
    assert Session.objects.get(pk=live.pk).deleted_at is None


def test_export_answers_download_url_and_the_file_downloads(api, owner, make_session):
    sessions = [make_session(owner, title=f"T{i}") for i in range(3)]
    response = post_json(
        api,
        ACTION_PATHS["export"],
        {"session_ids": [s.pk for s in sessions], "format": "json", "include_details": True},
    )
    assert response.status_code == 202
    data = response.json()
    op = BulkOperation.objects.get(pk=data["operation_id"])
    assert data["download_url"] == f"/api/download/{op.export_file}"
    assert data["metadata"]["format"] == "json"
    assert data["metadata"]["expires_at"] == op.expires_at.isoformat()
    run_worker()
    assert export_path(op.export_file).is_file()
    download = api.get(data["download_url"])
    assert download.status_code == 200
    records = json.loads(b"".join(download.streaming_content))
    assert sorted(r["id"] for r in records) == sorted(s.pk for s in sessions)
    assert "content_size" in records[0]


def test_atomic_close_with_an_ineligible_item_changes_nothing(api, owner, make_session):
    ok, bad = make_session(owner), make_session(owner, status="processing")
    op = start(api, "close", {"session_ids": [ok.pk, bad.pk], "atomic": True})
    run_worker()
    op.refresh_from_db()
    assert op.status == "failed"
    assert Session.objects.get(pk=ok.pk).status == "active"
    assert op.items.get(session_id=ok.pk).reason == "atomic_rollback"


def test_a_thousand_ids_are_accepted(api, owner):
    ids = [f"bulk-{i:04d}" for i in range(1000)]
    Session.objects.bulk_create(Session(id=i, owner=owner) for i in ids)
    op = start(api, "close", {"session_ids": ids})
    assert op.total == 1000
    run_worker()
    assert Session.objects.filter(owner=owner, status="closed").count() == 1000


def test_someone_elses_ids_are_not_found_and_their_rows_do_not_change(
    api, owner, stranger, make_session
):
    mine, theirs = make_session(owner), make_session(stranger)
    before = Session.objects.filter(pk=theirs.pk).values().get()
    op = start(api, "delete", {"session_ids": [mine.pk, theirs.pk]})
    run_worker()
    assert Session.objects.filter(pk=theirs.pk).values().get() == before
    assert op.items.get(session_id=theirs.pk).reason == "not_found"
    assert Session.objects.get(pk=mine.pk).deleted_at is not None


def test_filter_with_someone_elses_username_matches_nothing(api, owner, stranger, make_session):
    make_session(stranger)
    before = snapshot()
    response = post_json(api, ACTION_PATHS["close"], {"filter": {"owner": "stranger"}})
    assert response.status_code == 400
    assert "No sessions match" in response.json()["filter"][0]
    assert_nothing_happened(before)


# --- bad input: a 4xx, and nothing changes -----------------------------------------------------
BAD_BODIES = {
    "ids as a string": {"session_ids": "abc"},
    "ids as numbers": {"session_ids": [1, 2]},
    "ids as objects": {"session_ids": [{"id": "s-00001"}]},
    "ids null": {"session_ids": None},
    "empty list": {"session_ids": []},
    "path traversal": {"session_ids": ["../../etc/passwd"]},
    "NUL byte": {"session_ids": ["s-00001\x00"]},
    "SQL-looking": {"session_ids": ["s-00001' OR '1'='1"]},
    "SQL comment": {"session_ids": ["x; DROP TABLE bulkops_session;--"]},
    "trailing newline": {"session_ids": ["s-00001\n"]},
    "too long id": {"session_ids": ["a" * 65]},
    "both selections": {"session_ids": ["s-00001"], "filter": {}},
    "no selection": {},
    "extra owner field": {"session_ids": ["s-00001"], "owner": 2},
    "extra status field": {"session_ids": ["s-00001"], "status": "active"},
    "filter not an object": {"filter": "all"},
    "unknown filter key": {"filter": {"owner_id__gt": 0}},
    "impossible date": {"filter": {"created_after": "2024-02-30"}},
    "bad status": {"filter": {"status": "gone"}},
    "reason too long": {"session_ids": ["s-00001"], "reason": "x" * 501},
    "reason not text": {"session_ids": ["s-00001"], "reason": 5},
    "body is a list": ["s-00001"],
    "body is null": None,
}


@pytest.fixture
def world(owner, stranger, make_session):
    """A few sessions of two users in several states; the snapshot before the request."""
    make_session(owner, id="s-00001")
    make_session(owner, id="s-00002", status="closed")
    make_session(owner, id="s-00003", deleted=True)
    make_session(stranger, id="s-00004")
    return snapshot()


@pytest.mark.parametrize("action", sorted(ACTION_PATHS))
@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_body_is_400_and_changes_nothing(api, world, action, case):
    response = post_json(api, ACTION_PATHS[action], BAD_BODIES[case])
    assert response.status_code == 400, response.content
    assert response.json()
    assert_nothing_happened(world)


@pytest.mark.parametrize("action", sorted(ACTION_PATHS))
def test_malformed_json_is_400(api, world, action):
    response = api.post(
        ACTION_PATHS[action], data='{"session_ids": [', content_type="application/json"
    )
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert_nothing_happened(world)


@pytest.mark.parametrize("action", sorted(ACTION_PATHS))
def test_form_encoded_body_is_415(api, world, action):
    response = api.post(ACTION_PATHS[action], data={"session_ids": "s-00001"})
    assert response.status_code == 415
    assert_nothing_happened(world)


@pytest.mark.parametrize("action", sorted(ACTION_PATHS))
def test_one_id_past_the_cap_is_400(api, world, action):
    ids = [f"bulk-{i:04d}" for i in range(1001)]
    response = post_json(api, ACTION_PATHS[action], {"session_ids": ids})
    assert response.status_code == 400
    assert "At most 1000" in response.json()["session_ids"][0]
    assert_nothing_happened(world)


@pytest.mark.parametrize("action", sorted(ACTION_PATHS))
def test_duplicates_are_named(api, world, action):
    body = {"session_ids": ["s-00001", "s-00002", "s-00001", "s-00002", "s-00003"]}
    response = post_json(api, ACTION_PATHS[action], body)
    assert response.status_code == 400
    assert response.json() == {"session_ids": ["Duplicate session ids: s-00001, s-00002."]}
    assert_nothing_happened(world)


@pytest.mark.parametrize(
    "body",
    [{"soft_delete": "false"}, {"cascade_exports": 1}, {"atomic": None}],
    ids=["string bool", "number bool", "null bool"],
)
def test_delete_params_must_be_real_booleans(api, world, body):
    response = post_json(api, ACTION_PATHS["delete"], {"session_ids": ["s-00001"], **body})
    assert response.status_code == 400
    assert_nothing_happened(world)


@pytest.mark.parametrize("fmt", ["xml", "CSV", "", None, ["csv"]])
def test_unknown_export_format_is_400(api, world, fmt):
    response = post_json(api, ACTION_PATHS["export"], {"session_ids": ["s-00001"], "format": fmt})
    assert response.status_code == 400
    assert "format" in response.json()
    assert_nothing_happened(world)


def test_params_of_another_action_are_refused(api, world):
    response = post_json(api, ACTION_PATHS["close"], {"session_ids": ["s-00001"], "format": "csv"})
    assert response.status_code == 400
    assert "Unknown field" in response.json()["format"][0]
    assert_nothing_happened(world)


@pytest.mark.parametrize("action", sorted(ACTION_PATHS))
def test_twelve_megabyte_body_is_413_json(api, world, action):
    body = json.dumps({"session_ids": ["s-00001"], "reason": "x" * (12 * 1024 * 1024)})
    response = api.post(ACTION_PATHS[action], data=body, content_type="application/json")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "request_too_large"
    assert_nothing_happened(world)


@pytest.mark.parametrize("action", sorted(ACTION_PATHS))
def test_anonymous_is_refused(world, action):
    response = post_json(APIClient(), ACTION_PATHS[action], {"session_ids": ["s-00001"]})
    assert response.status_code in (401, 403)
    assert_nothing_happened(world)


def test_trailing_slash_on_a_post_path_is_404(api, world):
    response = post_json(api, ACTION_PATHS["close"] + "/", {"session_ids": ["s-00001"]})
    assert response.status_code == 404
    assert_nothing_happened(world)


# --- cookie auth and CSRF ----------------------------------------------------------------------
def cookie_client(user) -> APIClient:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    return client


@pytest.mark.parametrize("action", sorted(ACTION_PATHS))
def test_cookie_auth_without_csrf_token_is_403(owner, world, action):
    response = post_json(cookie_client(owner), ACTION_PATHS[action], {"session_ids": ["s-00001"]})
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert_nothing_happened(world)


def test_cookie_auth_with_csrf_token_is_accepted(owner, world):
    client = cookie_client(owner)
    client.get("/api/sessions/")  # any page; the test sets the cookie below
    from django.middleware.csrf import _get_new_csrf_string

    token = _get_new_csrf_string()
    client.cookies["csrftoken"] = token
    response = post_json(
        client, ACTION_PATHS["close"], {"session_ids": ["s-00001"]}, HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 202
    run_worker()
    assert Session.objects.get(pk="s-00001").status == "closed"


# --- idempotency ---------------------------------------------------------------------------------
def test_same_idempotency_key_and_body_returns_the_same_operation(api, world):
    body = {"session_ids": ["s-00001"]}
    first = post_json(api, ACTION_PATHS["close"], body, HTTP_IDEMPOTENCY_KEY="close-1")
    again = post_json(api, ACTION_PATHS["close"], body, HTTP_IDEMPOTENCY_KEY="close-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["operation_id"] == again.json()["operation_id"]
    assert BulkOperation.objects.count() == 1
    assert BulkOperationItem.objects.count() == 1
    info = api.get("/api/bulk/sessions/info").json()
    assert info["rate_limits"]["close"]["used"] == 1


def test_same_idempotency_key_with_another_body_is_422(api, world):
    post_json(api, ACTION_PATHS["close"], {"session_ids": ["s-00001"]}, HTTP_IDEMPOTENCY_KEY="k")
    before = snapshot()
    response = post_json(
        api, ACTION_PATHS["close"], {"session_ids": ["s-00002"]}, HTTP_IDEMPOTENCY_KEY="k"
    )
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_conflict"
    assert_nothing_happened(before, operations=1)


def test_idempotency_keys_are_per_user(api, world, stranger):
    body = {"session_ids": ["s-00001"]}
    post_json(api, ACTION_PATHS["close"], body, HTTP_IDEMPOTENCY_KEY="shared")
    response = post_json(
        token_client(stranger), ACTION_PATHS["close"], body, HTTP_IDEMPOTENCY_KEY="shared"
    )
    assert response.status_code == 202
    assert BulkOperation.objects.filter(idempotency_key="shared").count() == 2


@pytest.mark.parametrize("key", ["", "has space", "k" * 256])
def test_malformed_idempotency_key_is_400(api, world, key):
    response = post_json(
        api, ACTION_PATHS["close"], {"session_ids": ["s-00001"]}, HTTP_IDEMPOTENCY_KEY=key
    )
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert_nothing_happened(world)


def test_expired_idempotency_key_starts_a_new_operation(api, world, settings):
    body = {"session_ids": ["s-00001"]}
    first = post_json(api, ACTION_PATHS["close"], body, HTTP_IDEMPOTENCY_KEY="old")
    BulkOperation.objects.filter(pk=first.json()["operation_id"]).update(
        created_at=timezone.now() - timezone.timedelta(days=2)
    )
    again = post_json(api, ACTION_PATHS["close"], body, HTTP_IDEMPOTENCY_KEY="old")
    assert again.status_code == 202
    assert again.json()["operation_id"] != first.json()["operation_id"]
    assert BulkOperation.objects.count() == 2
