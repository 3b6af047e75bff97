"""Time-boxed chunks (``engine.chunks.ChunkSizer``): a run's first chunk is small, each
next one takes as many items as last about ``BULKOPS_CHUNK_SECONDS`` at the rate the
last one was measured at, ``BULKOPS_CHUNK_SIZE`` the most. So on the defaults an
operation whose items are costly moves in many steps and can be paused between them.

The sizer is given measured durations (no clock); the end-to-end test runs a real
1,000-session archive of ~150 KB sessions on the defaults and reads the operation's
row after each chunk."""

from __future__ import annotations

import random

import pytest

from bulkops.engine import Selection, executor, operation_create, operation_execute
from bulkops.engine.chunks import FIRST_CHUNK, MAX_GROWTH, ChunkSizer
from bulkops.engine.pausing import operation_pause, operation_resume
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.helpers import assert_counters_add_up, run_worker


# --- sizing ----------------------------------------------------------------------------------
def test_the_first_chunk_is_small_then_chunks_fit_the_target_at_the_measured_rate(settings):
    settings.BULKOPS_CHUNK_SECONDS = 0.25
    settings.BULKOPS_CHUNK_SIZE = 5000
    sizer = ChunkSizer()
    assert sizer.size == FIRST_CHUNK == 20
    sizer.measured(items=20, seconds=0.5)  # 40 items/s: 10 fit in 0.25 s
    assert sizer.size == 10
    sizer.measured(items=10, seconds=0.125)  # 80 items/s, but the last chunk did 40
    assert sizer.size == 10
    sizer.measured(items=10, seconds=0.125)  # 80 items/s twice
    assert sizer.size == 20


def test_a_chunk_grows_at_most_fourfold_and_never_past_the_chunk_size(settings):
    settings.BULKOPS_CHUNK_SECONDS = 0.25
    settings.BULKOPS_CHUNK_SIZE = 1000
    sizer = ChunkSizer()
    sizes = [sizer.size]
    for _ in range(5):
        sizer.measured(items=sizer.size, seconds=0.001 * sizer.size / 100)  # 100,000/s
        sizes.append(sizer.size)
    assert sizes == [20, 20 * MAX_GROWTH, 320, 1000, 1000, 1000]


def test_a_slow_chunk_shrinks_the_next_one_at_once_but_never_below_one_item(settings):
    settings.BULKOPS_CHUNK_SECONDS = 0.25
    sizer = ChunkSizer()
    sizer.measured(items=20, seconds=1.0)  # 20 items/s
    assert sizer.size == 5
    sizer.measured(items=5, seconds=60.0)
    assert sizer.size == 1


@pytest.mark.parametrize("chunk_size", [1, 2, 50])
def test_no_target_duration_means_every_chunk_takes_the_chunk_size(settings, chunk_size):
    settings.BULKOPS_CHUNK_SECONDS = 0
    settings.BULKOPS_CHUNK_SIZE = chunk_size
    sizer = ChunkSizer()
    assert sizer.size == chunk_size
    sizer.measured(items=chunk_size, seconds=30.0)
    assert sizer.size == chunk_size


def test_a_chunk_size_below_the_first_chunk_caps_the_first_chunk(settings):
    settings.BULKOPS_CHUNK_SECONDS = 0.25
    settings.BULKOPS_CHUNK_SIZE = 10
    assert ChunkSizer().size == 10


# --- on the defaults ---------------------------------------------------------------------------
SESSIONS, SIZE = 1000, 150_000


def _texts(n: int, size: int) -> list[str]:
    """``n`` texts of ``size`` characters that compress as prose does (windows of one
    block of random words), not as one repeated phrase."""
    rng = random.Random(7)
    words = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(3000)
    ]
    block = " ".join(rng.choices(words, k=(size * 3) // 5))
    return [block[(i * 7919) % size :][:size].ljust(size, ".") for i in range(n)]


@pytest.fixture
def big_sessions(owner, db):
    texts = _texts(SESSIONS, SIZE)
    for start in range(0, SESSIONS, 50):
        Session.objects.bulk_create(
            Session(owner=owner, id=f"big-{i:04d}", title=f"Big {i}", content=texts[i])
            for i in range(start, min(start + 50, SESSIONS))
        )
    return [f"big-{i:04d}" for i in range(SESSIONS)]


@pytest.mark.django_db
def test_on_the_defaults_a_large_archive_moves_in_steps_and_pauses_between_them(
    owner, big_sessions, monkeypatch
):
    # BULKOPS_CHUNK_SIZE and BULKOPS_CHUNK_SECONDS as shipped.
    seen: list[int] = []
    original = executor.record

    def record_then_read_the_row(op, part, now):
        original(op, part, now)
        seen.append(BulkOperation.objects.values_list("processed", flat=True).get(pk=op.pk))
        if len(seen) == 3:
            operation_pause(operation=op)  # as a request arriving during the third chunk

    monkeypatch.setattr(executor, "record", record_then_read_the_row)
    op = operation_create(
        user=owner, action="archive", selection=Selection(session_ids=big_sessions)
    ).operation
    operation_execute(operation_id=op.pk)
    op.refresh_from_db()

    assert len(set(seen)) == len(seen) == 3 and 0 < seen[0] < seen[1] < seen[2] < SESSIONS
    assert (op.status, op.processed) == ("paused", seen[2])
    assert Session.objects.filter(status="archived").count() == seen[2]

    monkeypatch.setattr(executor, "record", original)
    operation_resume(operation=op)
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded) == ("completed", SESSIONS)
    assert Session.objects.filter(status="archived", content="").count() == SESSIONS
    assert_counters_add_up(op)
