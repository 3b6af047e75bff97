"""Counting a request against a rate limit: on Redis one round trip, read back by the
same keys and windows django-ratelimit uses."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django_ratelimit.core import EXPIRATION_FUDGE, _split_rate, get_usage
from redis.connection import AbstractConnection

from bulkops.ratelimits import _keys, rate_limit_count, rate_limit_left, rates

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


def test_a_count_is_one_round_trip_and_counts_as_django_ratelimit_does(owner, monkeypatch):
    assert rate_limit_left(user=owner, scope="close")["used"] == 0  # the connection made
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
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
