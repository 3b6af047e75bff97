"""The selection drift check through the API: validate answers a ``selection_token``;
an action given it starts only on exactly the validated partition, else 409 with both
counts and nothing created; a bad token is a 400 naming it, never a 500."""

from __future__ import annotations

from unittest import mock

import pytest
from django.core import signing

from bulkops.engine.drift import SALT
from bulkops.models import BulkOperationItem, Session
from bulkops.tests.support.api import (
    ACTION_PATHS,
    VALIDATE,
    assert_nothing_happened,
    post_json,
    snapshot,
    token_client,
)

pytestmark = pytest.mark.django_db


def validate(client, action: str, **body) -> dict:
    response = post_json(client, VALIDATE, {"action": action, **body})
    assert response.status_code == 200, response.content
    return response.json()


def test_validate_then_act_with_the_token(api, owner, make_session):
    ids = [make_session(owner).pk, make_session(owner, status="closed").pk]
    preview = validate(api, "close", session_ids=ids)
    assert isinstance(preview["selection_token"], str) and preview["selection_token"]
    response = post_json(
        api,
        ACTION_PATHS["close"],
        {"session_ids": ids, "selection_token": preview["selection_token"]},
    )
    assert response.status_code == 202, response.content
    assert response.json()["total"] == 2
    assert BulkOperationItem.objects.count() == 2


def test_a_new_matching_session_is_a_409_with_both_counts(api, owner, make_session):
    for _ in range(2):
        make_session(owner, status="closed")
    body = {"filter": {"status": "closed"}, "soft_delete": True}
    token = validate(api, "delete", **body)["selection_token"]
    make_session(owner, status="closed")
    before = snapshot()
    response = post_json(api, ACTION_PATHS["delete"], {**body, "selection_token": token})
    assert response.status_code == 409
    data = response.json()
    assert data["code"] == "selection_drift"
    assert (data["previous_count"], data["current_count"]) == (2, 3)
    assert data["previous"] == {
        "total": 2,
        "eligible_count": 2,
        "skipped_count": 0,
        "ineligible_count": 0,
    }
    assert data["current"]["eligible_count"] == 3
    assert "2 sessions" in data["detail"] and "3 sessions" in data["detail"]
    assert_nothing_happened(before)
    assert not BulkOperationItem.objects.exists()


def test_a_session_that_became_processing_is_a_409(api, owner, make_session):
    a, b = make_session(owner), make_session(owner)
    token = validate(api, "archive", session_ids=[a.pk, b.pk])["selection_token"]
    Session.objects.filter(pk=a.pk).update(status="processing")
    before = snapshot()
    response = post_json(
        api, ACTION_PATHS["archive"], {"session_ids": [a.pk, b.pk], "selection_token": token}
    )
    assert response.status_code == 409
    data = response.json()
    assert (data["previous_count"], data["current_count"]) == (2, 2)
    assert (data["previous"]["eligible_count"], data["current"]["eligible_count"]) == (2, 1)
    assert data["current"]["ineligible_count"] == 1
    assert_nothing_happened(before)


@pytest.mark.parametrize("token", ["garbage", "a:b:c", "é" * 50, "x" * 1000])
def test_a_garbage_token_is_a_400_naming_it(api, owner, make_session, token):
    s = make_session(owner)
    before = snapshot()
    response = post_json(
        api, ACTION_PATHS["close"], {"session_ids": [s.pk], "selection_token": token}
    )
    assert response.status_code == 400
    assert "selection_token" in response.json()
    assert_nothing_happened(before)


@pytest.mark.parametrize("token", [None, 5, ["x"], "x" * 1001])
def test_a_token_of_the_wrong_type_or_length_is_a_400(api, owner, make_session, token):
    s = make_session(owner)
    response = post_json(
        api, ACTION_PATHS["close"], {"session_ids": [s.pk], "selection_token": token}
    )
    assert response.status_code == 400
    assert "selection_token" in response.json()


def test_a_tampered_token_is_a_400(api, owner, make_session):
    s = make_session(owner)
    token = validate(api, "close", session_ids=[s.pk])["selection_token"]
    payload = signing.loads(token, salt=SALT)
    payload["n"] = [5, 5, 0, 0]
    _, stamp, signature = token.rsplit(":", 2)
    forged_value = signing.dumps(payload, salt=SALT).rsplit(":", 2)[0]
    before = snapshot()
    response = post_json(
        api,
        ACTION_PATHS["close"],
        {"session_ids": [s.pk], "selection_token": f"{forged_value}:{stamp}:{signature}"},
    )
    assert response.status_code == 400
    assert "selection_token" in response.json()
    assert_nothing_happened(before)


def test_an_expired_token_is_a_409_and_creates_nothing(api, owner, make_session, settings):
    settings.BULKOPS_SELECTION_TOKEN_MAX_AGE_SECONDS = 30
    s = make_session(owner)
    with mock.patch("django.core.signing.time.time", return_value=1_800_000_000):
        token = validate(api, "close", session_ids=[s.pk])["selection_token"]
    before = snapshot()
    with mock.patch("django.core.signing.time.time", return_value=1_800_000_031):
        response = post_json(
            api, ACTION_PATHS["close"], {"session_ids": [s.pk], "selection_token": token}
        )
    assert response.status_code == 409
    assert response.json()["code"] == "selection_token_expired"
    assert "validate again" in response.json()["detail"]
    assert_nothing_happened(before)


def test_another_users_token_is_a_400(api, owner, stranger, make_session):
    s = make_session(owner)
    theirs = validate(token_client(stranger), "close", session_ids=[s.pk])["selection_token"]
    before = snapshot()
    response = post_json(
        api, ACTION_PATHS["close"], {"session_ids": [s.pk], "selection_token": theirs}
    )
    assert response.status_code == 400
    assert "another user" in response.json()["selection_token"][0]
    assert_nothing_happened(before)


def test_another_actions_token_is_a_400(api, owner, make_session):
    s = make_session(owner)
    token = validate(api, "close", session_ids=[s.pk])["selection_token"]
    before = snapshot()
    response = post_json(
        api, ACTION_PATHS["archive"], {"session_ids": [s.pk], "selection_token": token}
    )
    assert response.status_code == 400
    assert "issued for close, not archive" in response.json()["selection_token"][0]
    assert_nothing_happened(before)


def test_validate_refuses_a_selection_token_field(api, owner, make_session):
    s = make_session(owner)
    body = {"action": "close", "session_ids": [s.pk], "selection_token": "x"}
    response = post_json(api, VALIDATE, body)
    assert response.status_code == 400
    assert "selection_token" in response.json()


def test_validate_of_a_filter_matching_nothing_is_200_with_zero_counts(api, owner, make_session):
    make_session(owner, status="active")
    data = validate(api, "restore", filter={"search": "no such title"})
    assert data["action"] == "restore"
    assert (data["eligible_count"], data["skipped_count"], data["ineligible_count"]) == (0, 0, 0)
    assert (data["eligible"], data["eligible_ids"], data["skipped"], data["ineligible"]) == (
        [],
        [],
        [],
        [],
    )
    assert data["estimated_duration_seconds"] >= 0
    assert data["selection_token"]


def test_an_action_on_a_filter_matching_nothing_stays_a_400(api, owner, make_session):
    make_session(owner, status="active")
    before = snapshot()
    response = post_json(api, ACTION_PATHS["close"], {"filter": {"status": "closed"}})
    assert response.status_code == 400
    assert "No sessions match" in response.json()["filter"][0]
    assert_nothing_happened(before)
