"""Redis unreachable (the cache points at a port where nothing listens): rate limits
fail open, so the API and the admin keep serving — never a 500, never a hang."""

from __future__ import annotations

import time

import pytest

from bulkops.models import BulkOperation, Session
from bulkops.tests.support.api import post_json, token_client
from bulkops.tests.support.helpers import free_port, run_worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_gone(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    settings.RATELIMIT_USE_CACHE = "default"


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_info_validate_and_actions_are_served_without_redis(redis_gone, owner, make_session):
    make_session(owner, id="s1")
    client = token_client(owner)
    info, seconds = timed(lambda: client.get("/api/bulk/sessions/info"))
    assert info.status_code == 200 and seconds < 5
    assert info.json()["rate_limits"] == {}  # nothing to report: the counters are away
    body = {"action": "close", "session_ids": ["s1"]}
    validate, seconds = timed(lambda: post_json(client, "/api/bulk/sessions/validate", body))
    assert validate.status_code == 200 and seconds < 5
    close, seconds = timed(
        lambda: post_json(client, "/api/bulk/sessions/close", {"session_ids": ["s1"]})
    )
    assert close.status_code == 202, close.content
    assert seconds < 5
    assert BulkOperation.objects.get().total == 1


def test_the_admin_runs_a_bulk_action_without_redis(redis_gone, client, make_user, make_session):
    staff = make_user("boss", staff=True)
    make_session(staff, id="s1")
    client.force_login(staff)
    first = client.post(
        "/admin/bulkops/session/", {"action": "close_sessions", "_selected_action": ["s1"]}
    )
    assert first.status_code == 200
    second = client.post(
        "/admin/bulkops/session/",
        {
            "action": "close_sessions",
            "_selected_action": ["s1"],
            "post": "yes",
            "_bulk_confirm": "1",
        },
    )
    assert second.status_code == 302
    assert "/progress/" in second["Location"]
    op = BulkOperation.objects.get()
    assert (op.source, op.items.count()) == ("admin", 1)
    assert Session.objects.get(pk="s1").status == "active"  # queued: nothing ran yet
    assert client.get(second["Location"]).status_code == 200
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded) == ("completed", 1)
    assert Session.objects.get(pk="s1").status == "closed"
