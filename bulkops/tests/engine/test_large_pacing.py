"""BULKOPS_LARGE_MAX_ROWS_PER_SECOND (engine.large.pacing): a large run waits after each
committed chunk until it is within the rate, and its chunks are no larger than one
target duration's worth at that rate."""

from __future__ import annotations

import pytest

from bulkops import events
from bulkops.engine import Selection, operation_create
from bulkops.engine.large.pacing import Throttle
from bulkops.models import Session
from bulkops.tests.support.helpers import run_worker
from bulkops.tests.support.large import LARGE_PERMS, seed_sessions
from bulkops.tests.support.processes import using_postgres


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_throttle_waits_until_the_run_is_within_the_rate():
    clock = FakeClock()
    throttle = Throttle(100, clock=clock, sleep=clock.sleep)
    assert throttle.wait(50) == pytest.approx(0.5)  # 50 rows at 100/s: 0.5 s in
    clock.now += 0.2  # the next chunk took 0.2 s
    assert throttle.wait(50) == pytest.approx(0.3)
    clock.now += 2.0  # a slow chunk: already behind the rate
    assert throttle.wait(10) == 0.0
    assert clock.slept == [pytest.approx(0.5), pytest.approx(0.3)]


def test_no_rate_means_no_wait_and_no_chunk_limit():
    clock = FakeClock()
    throttle = Throttle(0, clock=clock, sleep=clock.sleep)
    assert throttle.wait(1_000_000) == 0.0 and clock.slept == []
    assert throttle.max_chunk is None


def test_a_chunk_takes_at_most_a_target_durations_worth(settings):
    settings.BULKOPS_CHUNK_SECONDS = 0.25
    assert Throttle(2000).max_chunk == 500
    settings.BULKOPS_CHUNK_SECONDS = 0  # fixed chunks: at most one second's worth
    assert Throttle(2000).max_chunk == 2000


@pytest.mark.postgres
@pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL")
@pytest.mark.django_db
def test_a_throttled_large_run_takes_chunks_within_the_rate(
    make_user, owner, settings, monkeypatch
):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 100
    settings.BULKOPS_LARGE_MAX_ROWS_PER_SECOND = 4000
    settings.BULKOPS_CHUNK_SECONDS = 0.25
    seed_sessions(owner, 3000)
    chunks: list[int] = []
    monkeypatch.setattr(
        events, "publish_sessions_updated", lambda op, ids, status: chunks.append(len(ids))
    )
    staff = make_user(staff=True, perms=LARGE_PERMS)
    op = operation_create(
        user=staff, action="close", selection=Selection(filter={"status": "active"})
    ).operation
    run_worker()
    op.refresh_from_db()
    assert op.status == "completed" and op.succeeded == 2100
    assert sum(chunks) == 2100 and max(chunks) <= 1000
    assert not Session.objects.filter(status="active").exists()
