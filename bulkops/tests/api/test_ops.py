"""``/healthz`` and ``/metrics``: what operators and load balancers read."""

from __future__ import annotations

import pytest

from bulkops.tests.support.helpers import execute, free_port

pytestmark = pytest.mark.django_db


def test_healthz_is_ok_with_the_queue_state(client, owner, make_session):
    make_session(owner, id="s1")
    execute(owner, "close", ["s1"])
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"]) == ("ok", "ok")
    assert body["queue"]["ready"] == 0
    assert body["queue"]["last_finished_age_seconds"] >= 0
    assert response["Cache-Control"].startswith("max-age=0")


def test_healthz_is_503_when_redis_is_configured_but_away(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    response = client.get("/healthz")
    assert response.status_code == 503
    assert (response.json()["status"], response.json()["redis"]) == ("unavailable", "error")


def test_metrics_count_operations_by_status_and_items(client, owner, make_session):
    for i in range(3):
        make_session(owner, id=f"s{i}")
    execute(owner, "close", ["s0", "s1", "s2"])
    execute(owner, "close", ["s0", "nope"])
    text = client.get("/metrics").content.decode()
    assert 'bulkops_operations{status="completed"} 1.0' in text
    assert 'bulkops_operations{status="partial"} 1.0' in text
    assert "bulkops_items_processed_total 5.0" in text
    assert "bulkops_queue_ready_tasks 0.0" in text
    assert "s0" not in text and owner.username not in text  # aggregates only


def test_metrics_token_when_set(client, settings):
    settings.BULKOPS_METRICS_TOKEN = "t0ken-for-scrapers"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer t0ken-for-scrapers")
    assert ok.status_code == 200 and b"bulkops_operations" in ok.content
