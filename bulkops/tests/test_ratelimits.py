"""Counting a request against a rate limit, and checking and counting it at once (the
engine's take): on Redis one round trip each, read back by the same keys and windows
django-ratelimit uses."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django_ratelimit.core import EXPIRATION_FUDGE, _split_rate, get_usage
from redis.connection import AbstractConnection

from bulkops.exceptions import RateLimited
from bulkops.ratelimits import _keys, rate_limit_count, rate_limit_left, rate_limit_taken, rates

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


def test_a_count_is_one_round_trip_and_counts_as_django_ratelimit_does(owner, monkeypatch):
    assert rate_limit_left(user=owner, scope="close")["used"] == 0  # the connection made
    sent = _counting_commands(monkeypatch)
    for _ in range(3):
        rate_limit_count(user=owner, scope="close")

    assert len(sent) == 3
    assert rate_limit_left(user=owner, scope="close")["used"] == 3
    rate = rates()["close"]
    usage = get_usage(None, group="bulkops.close", key=lambda g, r: str(owner.pk), rate=rate)
    assert usage["count"] == 3
    key = cache.client.make_key(_keys(owner, {"close": rate})["close"][0])
    ttl = cache.client.get_client().ttl(key)
    assert 0 < ttl <= _split_rate(rate)[1] + EXPIRATION_FUDGE


def _counting_commands(monkeypatch) -> list[bytes]:
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    return sent


def _used(user) -> int:
    rate = rates()["close"]
    return get_usage(None, group="bulkops.close", key=lambda g, r: str(user.pk), rate=rate)["count"]


def test_a_take_checks_and_counts_in_one_round_trip_on_django_ratelimits_keys(
    owner, monkeypatch, settings
):
    settings.BULKOPS_RATE_LIMITS = {"close": "3/m"}
    with rate_limit_taken(user=owner, scope="close"):
        pass  # the script loaded, the connection made
    sent = _counting_commands(monkeypatch)
    for _ in range(2):
        with rate_limit_taken(user=owner, scope="close"):
            pass

    assert len(sent) == 2
    assert _used(owner) == 3
    with pytest.raises(RateLimited) as refused, rate_limit_taken(user=owner, scope="close"):
        raise AssertionError("a request past the limit ran")
    assert 0 < refused.value.retry_after <= 60
    assert _used(owner) == 3  # a refusal is not counted
    key = cache.client.make_key(_keys(owner, {"close": "3/m"})["close"][0])
    assert 0 < cache.client.get_client().ttl(key) <= 60 + EXPIRATION_FUDGE


def test_a_request_refused_after_its_take_is_given_back(owner):
    with pytest.raises(ValueError), rate_limit_taken(user=owner, scope="close"):
        assert _used(owner) == 1
        raise ValueError("refused later: the selection, the cap")
    assert _used(owner) == 0


def test_without_the_cache_a_take_lets_the_request_through_uncounted(owner, monkeypatch, caplog):
    def failing(*args, **kwargs):
        raise ConnectionError("Redis away")

    monkeypatch.setattr("bulkops.ratelimits._take", failing)
    ran = []
    with rate_limit_taken(user=owner, scope="close"):
        ran.append(True)
    assert ran == [True]
    assert "rate limit of close not counted: the cache failed" in caplog.text
