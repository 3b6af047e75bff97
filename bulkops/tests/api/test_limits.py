"""Rate limits (429 + Retry-After, counted only for accepted requests), the cap on
active operations, and the info endpoint that reports what is left."""

from __future__ import annotations

import pytest
from django_ratelimit import core as ratelimit_core

from bulkops.models import BulkOperation, Session
from bulkops.tests.support import api as support
from bulkops.tests.support.api import (
    ACTION_PATHS,
    VALIDATE,
    assert_nothing_happened,
    post_json,
    snapshot,
)

pytestmark = pytest.mark.django_db
api = support.api
fast_password_hasher = support.fast_password_hasher


class FrozenClock:
    """django-ratelimit's clock, frozen: windows move only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FrozenClock:
    frozen = FrozenClock(1_700_000_000.0)
    monkeypatch.setattr(ratelimit_core, "time", frozen)
    return frozen


def test_eleventh_delete_in_a_minute_is_429_until_the_window_ends(
    api, owner, make_session, clock, settings
):
    settings.BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER = 100
    sessions = [make_session(owner) for _ in range(12)]
    for s in sessions[:10]:
        assert post_json(api, ACTION_PATHS["delete"], {"session_ids": [s.pk]}).status_code == 202
    before = snapshot()
    response = post_json(api, ACTION_PATHS["delete"], {"session_ids": [sessions[10].pk]})
    assert response.status_code == 429
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    body = response.json()
    assert body["code"] == "rate_limited" and body["retry_after"] == retry_after
    assert "delete" in body["detail"]
    assert_nothing_happened(before, operations=10)

    clock.now += retry_after + 1
    again = post_json(api, ACTION_PATHS["delete"], {"session_ids": [sessions[10].pk]})
    assert again.status_code == 202
    assert BulkOperation.objects.count() == 11


def test_rates_come_from_settings(api, owner, make_session, clock, settings):
    settings.BULKOPS_RATE_LIMITS = {**settings.BULKOPS_RATE_LIMITS, "close": "2/2s"}
    s = make_session(owner)
    codes = [
        post_json(api, ACTION_PATHS["close"], {"session_ids": [s.pk]}).status_code for _ in range(3)
    ]
    assert codes == [202, 202, 429]
    clock.now += 3
    assert post_json(api, ACTION_PATHS["close"], {"session_ids": [s.pk]}).status_code == 202


def test_refused_requests_do_not_use_up_the_budget(api, owner, make_session, clock, settings):
    settings.BULKOPS_RATE_LIMITS = {**settings.BULKOPS_RATE_LIMITS, "archive": "1/m"}
    s = make_session(owner)
    for _ in range(5):
        assert post_json(api, ACTION_PATHS["archive"], {"session_ids": "bad"}).status_code == 400
    assert post_json(api, ACTION_PATHS["archive"], {"session_ids": [s.pk]}).status_code == 202


def test_validate_is_rate_limited_too(api, owner, make_session, clock, settings):
    settings.BULKOPS_RATE_LIMITS = {**settings.BULKOPS_RATE_LIMITS, "validate": "2/m"}
    s = make_session(owner)
    body = {"action": "close", "session_ids": [s.pk]}
    codes = [post_json(api, VALIDATE, body).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_too_many_active_operations_is_429(api, owner, make_session, settings):
    settings.BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER = 2
    s = make_session(owner)
    for _ in range(2):
        assert post_json(api, ACTION_PATHS["close"], {"session_ids": [s.pk]}).status_code == 202
    before = snapshot()
    response = post_json(api, ACTION_PATHS["close"], {"session_ids": [s.pk]})
    assert response.status_code == 429
    assert response.json()["code"] == "too_many_active_operations"
    assert int(response["Retry-After"]) >= 1
    assert_nothing_happened(before, operations=2)


def test_info_reports_limits_what_is_left_and_session_counts(api, owner, make_session, clock):
    make_session(owner)
    make_session(owner, status="closed")
    make_session(owner, deleted=True)
    s = Session.objects.filter(status="active").first()
    post_json(api, ACTION_PATHS["close"], {"session_ids": [s.pk]})
    for path in ("/api/bulk/sessions/info", "/api/bulk/sessions/info/"):
        data = api.get(path).json()
        assert data["limits"]["max_sessions_per_operation"] == 1000
        assert data["limits"]["max_request_bytes"] == 1024 * 1024
        assert data["rate_limits"]["close"]["used"] == 1
        assert (
            data["rate_limits"]["close"]["remaining"] == data["rate_limits"]["close"]["limit"] - 1
        )
        assert data["rate_limits"]["delete"]["rate"] == "10/m"
        assert data["active_operations"] == 1
        assert data["sessions"] == {
            "active": 1,
            "processing": 0,
            "closed": 1,
            "archived": 0,
            "deleted": 1,
            "total": 3,
        }
