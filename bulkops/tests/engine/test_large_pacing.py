"""A large run's pace (engine.large.pacing). BULKOPS_LARGE_MAX_ROWS_PER_SECOND: it waits
after each committed chunk until it is within the rate, and its chunks are no larger
than one target duration's worth at that rate. The back-off: a chunk far slower than
the run's recent median, or one that met locked rows, makes it wait (longer while the
pressure lasts) and take smaller chunks, which grow back once chunks run at pace."""

from __future__ import annotations

import time

import pytest

from bulkops import events
from bulkops.engine import Selection, operation_create
from bulkops.engine.large import pacing
from bulkops.engine.large import run as large_run
from bulkops.engine.large.pacing import BackOff, Throttle
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


def backoff(clock: FakeClock) -> BackOff:
    return BackOff(slowdown=0.25, pause=1.0, longest=10.0, clock=clock, sleep=clock.sleep)


def at_pace(pacing: BackOff, chunks: int, *, rows: int = 5000, seconds: float = 0.25) -> None:
    for _ in range(chunks):
        assert pacing.measured(rows=rows, seconds=seconds) == 0.0


def test_chunks_at_pace_never_wait_nor_shrink():
    clock = FakeClock()
    pacing = backoff(clock)
    at_pace(pacing, 30)
    at_pace(pacing, 5, seconds=0.5)  # twice as slow: not a sharp slowdown
    assert clock.slept == [] and pacing.size(5000) == 5000


def test_a_sharp_slowdown_waits_and_halves_the_next_chunks_then_they_grow_back():
    clock = FakeClock()
    pacing = backoff(clock)
    at_pace(pacing, 5)  # 20,000 sessions/s
    assert pacing.measured(rows=5000, seconds=5.0) == 1.0  # 1,000/s: under a quarter
    assert pacing.size(5000) == 2500
    assert pacing.measured(rows=2500, seconds=5.0) == 2.0  # still: the wait doubles
    assert pacing.size(5000) == 1250
    at_pace(pacing, 1, rows=1250, seconds=0.0625)  # at pace again: back up
    assert pacing.size(5000) == 2500
    at_pace(pacing, 1, rows=2500, seconds=0.125)
    assert pacing.size(5000) == 5000  # grown back to what the sizer asks: no limit
    assert clock.slept == [1.0, 2.0] and pacing.waited == 3.0


def test_the_wait_doubles_up_to_the_longest_while_the_pressure_lasts():
    clock = FakeClock()
    pacing = backoff(clock)
    at_pace(pacing, 3)
    waits = [pacing.measured(rows=1, seconds=10.0, locked=True) for _ in range(7)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert pacing.size(5000) == 1


def test_locked_rows_back_off_even_before_a_median_exists():
    clock = FakeClock()
    pacing = backoff(clock)
    assert pacing.measured(rows=20, seconds=0.01) == 0.0  # one chunk: no median yet
    assert pacing.measured(rows=80, seconds=5.0, locked=True) == 1.0
    assert pacing.size(320) == 40


def test_small_chunks_slow_only_by_their_fixed_costs_are_not_pressure():
    """Halved chunks are slower per session (a chunk's fixed costs weigh more): that
    must not read as more pressure, or the chunks would shrink to nothing."""
    clock = FakeClock()
    pacing = backoff(clock)

    def seconds(rows: int) -> float:  # 0.2 s a chunk, plus 40,000 sessions a second
        return 0.2 + rows / 40_000

    at_pace(pacing, 10, rows=5000, seconds=seconds(5000))
    for _ in range(3):  # three chunks meet locked rows: 5000 → 625
        pacing.measured(rows=pacing.size(5000), seconds=5.0, locked=True)
    assert pacing.size(5000) == 625
    for rows in (625, 1250, 2500):
        assert pacing.measured(rows=rows, seconds=seconds(rows)) == 0.0
    assert pacing.size(5000) == 5000 and clock.slept == [1.0, 2.0, 4.0]


def test_a_lasting_change_of_pace_stops_being_pressure():
    """Costlier sessions further on (larger contents to archive, say): the slow chunks
    join the median, so the run backs off a few times, not for good."""
    clock = FakeClock()
    pacing = backoff(clock)
    at_pace(pacing, 10, seconds=0.25)
    waits = [pacing.measured(rows=5000, seconds=2.0) for _ in range(40)]
    assert 0 < sum(1 for w in waits if w) <= 12 and waits[-10:] == [0.0] * 10


def test_a_zero_slowdown_turns_the_back_off_off():
    clock = FakeClock()
    pacing = BackOff(slowdown=0, pause=1.0, longest=10.0, clock=clock, sleep=clock.sleep)
    at_pace(pacing, 5)
    assert pacing.measured(rows=5000, seconds=100.0, locked=True) == 0.0
    assert clock.slept == [] and pacing.size(5000) == 5000


def test_the_back_off_reads_its_settings(settings):
    settings.BULKOPS_LARGE_BACKOFF_SLOWDOWN = 0.5
    settings.BULKOPS_LARGE_BACKOFF_SECONDS = 0.2
    settings.BULKOPS_LARGE_BACKOFF_MAX_SECONDS = 3
    pacing = BackOff.configured()
    assert (pacing.slowdown, pacing.pause, pacing.longest) == (0.5, 0.2, 3.0)


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


@pytest.mark.postgres
@pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL")
@pytest.mark.django_db
def test_a_large_run_backs_off_after_a_chunk_that_slowed_down_sharply(
    make_user, owner, settings, monkeypatch
):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 100
    settings.BULKOPS_CHUNK_SECONDS = 0  # every chunk 200 sessions, unless backed off
    settings.BULKOPS_CHUNK_SIZE = 200
    settings.BULKOPS_LARGE_SLICES = 1
    seed_sessions(owner, 3000)
    clock = FakeClock()
    monkeypatch.setattr(
        pacing.BackOff,
        "configured",
        classmethod(lambda cls: BackOff(slowdown=0.25, pause=1.0, longest=10.0, sleep=clock.sleep)),
    )
    calls = []
    real_apply = large_run.apply_chunk

    def apply_slowly(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            time.sleep(2.0)  # the sixth chunk waits on something: far below the median
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(large_run, "apply_chunk", apply_slowly)
    staff = make_user(staff=True, perms=LARGE_PERMS)
    op = operation_create(user=staff, action="close", selection=Selection(filter={})).operation
    run_worker()
    op.refresh_from_db()
    assert op.processed == 3000 and not Session.objects.filter(status="active").exists()
    sizes = [c.succeeded + c.skipped + c.failed for c in op.chunks.order_by("first_id")]
    assert sizes[5] == 200 and sizes[6] <= 100  # the chunk after the slow one: halved
    assert clock.slept and clock.slept[0] == 1.0
    assert 200 in sizes[7:]  # grown back once chunks ran at pace again
