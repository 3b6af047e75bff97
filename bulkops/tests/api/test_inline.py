"""A small operation runs in the request (``BULKOPS_INLINE_MAX_SESSIONS``): the 202
already carries the final status, and the status URL says the same."""

from __future__ import annotations

import pytest

from bulkops.models import BulkOperation, Session
from bulkops.tests.support import api as support
from bulkops.tests.support.api import ACTION_PATHS, post_json

pytestmark = pytest.mark.django_db
api = support.api
fast_password_hasher = support.fast_password_hasher


@pytest.fixture(autouse=True)
def inline_on(settings):
    settings.BULKOPS_INLINE_MAX_SESSIONS = 20


def test_the_202_of_a_small_close_carries_its_final_status(api, owner, make_session):
    ids = [make_session(owner).pk, make_session(owner, status="processing").pk]
    response = post_json(api, ACTION_PATHS["close"], {"session_ids": ids})
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["total"]) == ("partial", 2)
    status = api.get(response["Location"]).json()
    assert (status["status"], status["succeeded"], status["failed"], status["progress"]) == (
        "partial",
        1,
        1,
        100,
    )
    assert status["errors"] == [
        {"session_id": ids[1], "reason": "processing", "message": status["errors"][0]["message"]}
    ]
    assert Session.objects.get(pk=ids[0]).status == "closed"


def test_an_atomic_202_says_failed_and_nothing_changed(api, owner, make_session):
    ids = [make_session(owner).pk, "nope"]
    response = post_json(api, ACTION_PATHS["archive"], {"session_ids": ids, "atomic": True})
    assert response.status_code == 202 and response.json()["status"] == "failed"
    assert Session.objects.get(pk=ids[0]).status == "active"
    op = BulkOperation.objects.get()
    assert dict(op.items.values_list("session_id", "reason")) == {
        ids[0]: "atomic_rollback",
        "nope": "not_found",
    }


def test_a_small_export_is_still_answered_pending(api, owner, make_session):
    sid = make_session(owner).pk
    response = post_json(api, ACTION_PATHS["export"], {"session_ids": [sid], "format": "csv"})
    assert response.status_code == 202
    assert response.json()["status"] == "pending" and "download_url" in response.json()
