"""Large operations through the API: the same endpoints past the cap for a user with
``bulkops.run_large_operation``; a clear 400 that creates nothing for everyone else,
past BULKOPS_MAX_LARGE_OPERATION_SESSIONS, and on SQLite."""

from __future__ import annotations

import json

import pytest

from bulkops.models import BulkOperation, BulkOperationItem
from bulkops.tests.support.api import VALIDATE, post_json, snapshot, token_client
from bulkops.tests.support.large import LARGE_PERMS
from bulkops.tests.support.processes import using_postgres

pytestmark = pytest.mark.django_db

CLOSE = "/api/bulk/sessions/close"
on_postgres = pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL")


@pytest.fixture(autouse=True)
def twelve_sessions_past_a_cap_of_five(settings, owner, make_session):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 5
    for i in range(12):
        make_session(owner, status="closed" if i % 4 == 0 else "active")


@pytest.fixture
def large(make_user):
    return token_client(make_user(staff=True, perms=LARGE_PERMS))


@on_postgres
def test_validate_past_the_cap_answers_counts_and_samples(large):
    response = post_json(large, VALIDATE, {"action": "close", "filter": {}})
    assert response.status_code == 200
    data = response.json()
    assert data["lists_truncated"] is True
    assert (data["eligible_count"], data["skipped_count"], data["ineligible_count"]) == (9, 3, 0)
    assert data["counts_by_reason"] == {"already_closed": 3}
    assert len(data["eligible_ids"]) == 9 and data["selection_token"]
    assert len(response.content) < 50_000


@on_postgres
def test_the_action_past_the_cap_answers_202_and_writes_no_item(large):
    token = post_json(large, VALIDATE, {"action": "close", "filter": {}}).json()["selection_token"]
    response = post_json(large, CLOSE, {"filter": {}, "selection_token": token})
    assert response.status_code == 202
    data = response.json()
    assert (data["status"], data["total"]) == ("pending", 12)
    assert response["Location"] == data["status_url"]
    op = BulkOperation.objects.get(pk=data["operation_id"])
    assert op.is_large
    assert not BulkOperationItem.objects.exists()


def test_without_the_permission_the_cap_stays_and_nothing_is_created(make_user):
    client = token_client(make_user(staff=True, perms=("bulkops.change_session",)))
    before = snapshot()
    response = post_json(client, CLOSE, {"filter": {}})
    assert response.status_code == 400
    assert "matches 12 sessions; the cap for close is 5" in json.dumps(response.json())
    assert snapshot() == before and not BulkOperation.objects.exists()


@on_postgres
def test_past_the_large_cap_a_400_gives_the_count_and_the_cap(large, settings):
    settings.BULKOPS_MAX_LARGE_OPERATION_SESSIONS = 10
    for path, body in ((VALIDATE, {"action": "close", "filter": {}}), (CLOSE, {"filter": {}})):
        response = post_json(large, path, body)
        assert response.status_code == 400
        text = json.dumps(response.json())
        assert "more than 10" in text or "12 sessions" in text
        assert "the cap for large operations is 10" in text
    assert not BulkOperation.objects.exists()


@pytest.mark.skipif(using_postgres(), reason="the SQLite refusal")
def test_on_sqlite_a_large_operation_is_a_clear_400(large):
    before = snapshot()
    response = post_json(large, CLOSE, {"filter": {}})
    assert response.status_code == 400
    assert "need PostgreSQL" in json.dumps(response.json())
    assert snapshot() == before and not BulkOperation.objects.exists()
