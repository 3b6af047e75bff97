"""POST /api/bulk/sessions/validate: partitions the selection and changes nothing."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from bulkops.tests.support import api as support
from bulkops.tests.support.api import VALIDATE, assert_nothing_happened, post_json, snapshot

pytestmark = pytest.mark.django_db
api = support.api
fast_password_hasher = support.fast_password_hasher


def test_validate_partitions_every_id_and_changes_nothing(api, owner, stranger, make_session):
    make_session(owner, id="ok-1", title="First")
    make_session(owner, id="closed-1", status="closed")
    make_session(owner, id="busy-1", status="processing")
    make_session(stranger, id="theirs-1")
    before = snapshot()
    body = {"action": "close", "session_ids": ["ok-1", "closed-1", "busy-1", "theirs-1", "nope"]}
    response = post_json(api, VALIDATE, body)
    assert response.status_code == 200
    data = response.json()
    assert data["action"] == "close"
    assert (data["eligible_count"], data["skipped_count"], data["ineligible_count"]) == (1, 1, 3)
    assert data["eligible"] == [{"session_id": "ok-1", "title": "First", "status": "active"}]
    assert data["eligible_ids"] == ["ok-1"]
    assert data["skipped"] == [{"session_id": "closed-1", "reason": "already_closed"}]
    assert [(i["session_id"], i["reason"]) for i in data["ineligible"]] == [
        ("busy-1", "processing"),
        ("theirs-1", "not_found"),
        ("nope", "not_found"),
    ]
    assert all(i["message"] for i in data["ineligible"])
    assert data["estimated_duration_seconds"] > 0
    assert "cascade" not in data
    assert_nothing_happened(before)


def test_validate_delete_previews_cascaded_exports(api, owner, make_session):
    a = make_session(owner, exports=2)
    b = make_session(owner, exports=1)
    before = snapshot()
    body = {"action": "delete", "session_ids": [a.pk, b.pk], "cascade_exports": True}
    data = post_json(api, VALIDATE, body).json()
    assert data["cascade"] == {"exports": 3}
    assert post_json(api, VALIDATE, {**body, "cascade_exports": False}).json()["cascade"] == {
        "exports": 0
    }
    assert_nothing_happened(before)


def test_validate_hard_delete_without_permission_is_ineligible(api, owner, make_session):
    s = make_session(owner)
    body = {"action": "delete", "session_ids": [s.pk], "soft_delete": False}
    data = post_json(api, VALIDATE, body).json()
    assert data["ineligible"][0]["reason"] == "permission_denied"


def test_validate_by_filter(api, owner, make_session):
    for _ in range(3):
        make_session(owner, status="closed")
    make_session(owner)
    data = post_json(api, VALIDATE, {"action": "archive", "filter": {"status": "closed"}}).json()
    assert data["eligible_count"] == 3


def test_filter_over_the_cap_names_the_count_and_the_cap(api, owner, make_session, settings):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 3
    for _ in range(5):
        make_session(owner)
    before = snapshot()
    response = post_json(api, VALIDATE, {"action": "close", "filter": {"status": ["active"]}})
    assert response.status_code == 400
    message = response.json()["filter"][0]
    assert "matches 5 sessions" in message and "cap for close is 3" in message
    assert_nothing_happened(before)


def test_filter_dates_with_any_iso_offset_work(api, owner, make_session):
    make_session(owner)
    for moment in ("2000-01-01T00:00:00+20:07", "2000-01-01T00:00:00-19:39", "2000-01-01"):
        body = {"action": "close", "filter": {"created_after": moment}}
        assert post_json(api, VALIDATE, body).json()["eligible_count"] == 1


def test_export_filter_cap_is_the_export_cap(api, owner, make_session, settings):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 3
    settings.BULKOPS_MAX_EXPORT_SESSIONS = 10
    for _ in range(5):
        make_session(owner)
    data = post_json(api, VALIDATE, {"action": "export", "filter": {}}).json()
    assert data["eligible_count"] == 5


@pytest.mark.parametrize(
    "body",
    [
        {"action": "explode", "session_ids": ["s-1"]},
        {"action": None, "session_ids": ["s-1"]},
        {"session_ids": ["s-1"]},
        {"action": "export", "session_ids": ["s-1"], "format": "xml"},
        {"action": "close", "session_ids": ["s-1"], "owner": 1},
        {"action": "close", "filter": {"created_before": "yesterday"}},
        {"action": "close", "filter": {"created_before": "0001-01-01T00:00:00+05:00"}},
        {"action": "close", "filter": {"owner": "²"}},
        {"action": "close", "filter": {"search": "x\x00y"}},
    ],
    ids=[
        "unknown action",
        "null action",
        "no action",
        "unknown format",
        "extra field",
        "bad date",
        "date out of range in UTC",
        "non-ascii digit owner",
        "NUL search",
    ],
)
def test_bad_validate_input_is_400(api, owner, make_session, body):
    make_session(owner, id="s-1")
    before = snapshot()
    response = post_json(api, VALIDATE, body)
    assert response.status_code == 400
    assert_nothing_happened(before)


def test_validate_requires_authentication(owner, make_session):
    make_session(owner, id="s-1")
    response = post_json(APIClient(), VALIDATE, {"action": "close", "session_ids": ["s-1"]})
    assert response.status_code in (401, 403)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "close", "soft_delete": False}, "soft_delete"),
        ({"action": "export", "atomic": True}, "atomic"),
        ({"action": "delete", "format": "json"}, "format"),
        ({"action": "restore", "cascade_exports": True}, "cascade_exports"),
        ({"action": "archive", "include_details": False}, "include_details"),
    ],
)
def test_a_parameter_the_action_does_not_take_is_a_400_as_on_the_action(
    api, owner, make_session, body, field
):
    """Validate refuses what the action endpoint would refuse, with the same 400 shape
    (the field named), rather than validate a request the action would not run."""
    make_session(owner, id="s-1")
    before = snapshot()
    response = post_json(api, VALIDATE, {**body, "session_ids": ["s-1"]})
    assert response.status_code == 400, response.content
    assert list(response.json()) == [field]
    assert body["action"] in response.json()[field][0]
    action_path = support.ACTION_PATHS[body["action"]]
    on_action = post_json(api, action_path, {k: v for k, v in body.items() if k != "action"}
                          | {"session_ids": ["s-1"]})  # fmt: skip
    assert on_action.status_code == 400 and list(on_action.json()) == [field]
    assert_nothing_happened(before)


@pytest.mark.parametrize(
    "body",
    [
        {"action": "close", "atomic": True},
        {"action": "archive", "atomic": False},
        {"action": "delete", "soft_delete": True, "cascade_exports": True, "atomic": True},
        {"action": "export", "format": "json", "include_details": True},
        {"action": "restore"},
    ],
)
def test_each_action_takes_its_own_parameters_on_validate(api, owner, make_session, body):
    make_session(owner, id="s-1")
    response = post_json(api, VALIDATE, {**body, "session_ids": ["s-1"]})
    assert response.status_code == 200, response.content
