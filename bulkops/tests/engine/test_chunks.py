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

from bulkops.actions.registry import get_action
from bulkops.engine import Selection, executor, operation_create, operation_execute
from bulkops.engine.chunks import (
    FIRST_CHUNK,
    MAX_GROWTH,
    REMEMBER_MIN_ITEMS,
    ChunkSizer,
    rate_key,
)
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


# --- the rate a process remembers ------------------------------------------------------------
def test_a_sizeable_chunk_s_rate_sizes_the_first_chunk_of_the_next_run_under_its_key(settings):
    settings.BULKOPS_CHUNK_SECONDS = 0.25
    settings.BULKOPS_CHUNK_SIZE = 5000
    first_run = ChunkSizer(key="close")
    assert first_run.size == FIRST_CHUNK
    first_run.measured(items=REMEMBER_MIN_ITEMS, seconds=REMEMBER_MIN_ITEMS / 8000)  # 8,000/s

    assert ChunkSizer(key="close").size == 2000  # 8,000/s × 0.25 s
    assert ChunkSizer(key="close", maximum=500).size == 500  # a throttle's bound still holds
    assert ChunkSizer(key="restore").size == ChunkSizer().size == FIRST_CHUNK  # other keys


def test_a_small_chunk_s_rate_is_not_remembered_and_a_slow_one_is_never_below_the_first(settings):
    settings.BULKOPS_CHUNK_SECONDS = 0.25
    ChunkSizer(key="close").measured(items=REMEMBER_MIN_ITEMS - 1, seconds=0.0001)
    assert ChunkSizer(key="close").size == FIRST_CHUNK  # mostly fixed costs: not a rate
    ChunkSizer(key="close").measured(items=REMEMBER_MIN_ITEMS, seconds=10.0)  # 10/s
    assert ChunkSizer(key="close").size == FIRST_CHUNK


@pytest.mark.parametrize(
    ("action", "params", "remembered"),
    [
        ("close", {}, True),
        ("restore", {}, True),
        ("delete", {"soft_delete": True}, True),
        ("delete", {"soft_delete": True, "cascade_exports": True}, False),
        ("delete", {"soft_delete": False}, False),
        ("archive", {}, False),
        ("export", {"format": "csv"}, False),
    ],
)
def test_only_actions_whose_items_cost_the_same_whatever_the_session_holds_remember_a_rate(
    owner, action, params, remembered
):
    act = get_action(action)(user=owner, params=params)
    assert (rate_key(act) is not None) is remembered


@pytest.mark.django_db
def test_a_worker_s_second_close_starts_at_the_size_its_first_one_grew_to(
    owner, make_session, monkeypatch
):
    # BULKOPS_CHUNK_SIZE and BULKOPS_CHUNK_SECONDS as shipped.
    original = executor.record

    def chunk_sizes(count: int, prefix: str) -> list[int]:
        ids = [make_session(owner, id=f"{prefix}-{i:04d}").pk for i in range(count)]
        op = operation_create(
            user=owner, action="close", selection=Selection(session_ids=ids)
        ).operation
        sizes: list[int] = []

        def record(op, part, now):
            sizes.append(part.processed)
            original(op, part, now)

        monkeypatch.setattr(executor, "record", record)
        operation_execute(operation_id=op.pk)
        op.refresh_from_db()
        assert (op.status, op.succeeded) == ("completed", count)
        return sizes

    first = chunk_sizes(1000, "a")
    second = chunk_sizes(1000, "b")
    assert first[0] == FIRST_CHUNK and sum(first) == sum(second) == 1000
    assert second[0] > FIRST_CHUNK and len(second) < len(first)
    assert Session.objects.filter(status="closed").count() == 2000


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
