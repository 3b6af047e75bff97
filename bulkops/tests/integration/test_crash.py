"""(c) A worker SIGKILLed in the middle of an archive: another worker's reaper resumes
the operation from its pending items — nothing lost, nothing applied twice."""

from __future__ import annotations

import os
import signal
import time

import pytest

from bulkops.actions.archive import decompress_content
from bulkops.tests.support.processes import (
    content_for,
    seed,
    using_postgres,
    using_redis,
    wait_until,
)

pytestmark = pytest.mark.processes
SIZE = 64 * 1024  # characters per session: "large" (1000 of them: ~70 MB of UTF-8)


def assert_task_rows_lost_then_successful(db, procs) -> None:
    """The victim's task row, left RUNNING by django-tasks-db, was marked lost. (The
    rescuer marks its own task row SUCCESSFUL just after the operation's last commit:
    wait for that before reading the rows.)"""
    wait_until(
        lambda: (
            not db.scalar(
                "SELECT COUNT(*) FROM django_tasks_database_dbtaskresult WHERE status = %s",
                "RUNNING",
            )
        ),
        "the task rows to settle",
        timeout=30,
    )
    tasks = db.query(
        "SELECT status, exception_class_path FROM django_tasks_database_dbtaskresult "
        "ORDER BY enqueued_at"
    )
    assert sorted(tasks) == [("FAILED", "bulkops.engine.queue.WorkerLost"), ("SUCCESSFUL", "")], (
        tasks,
        procs.log("worker-rescuer"),
    )


def assert_archived_exactly_once(db, *, sessions: int) -> None:
    """Content moved into the blob, which gives back the original, for every session."""
    rows = db.query(
        "SELECT id, status, content, archive_blob, archive_original_size FROM bulkops_session "
        "ORDER BY id"
    )
    assert len(rows) == sessions
    for sid, status, content, blob, original_size in rows:
        i = int(sid.split("-")[1])
        assert (status, content) == ("archived", ""), sid
        original = content_for(i, SIZE)
        assert decompress_content(bytes(blob)) == original, sid
        assert original_size == len(original.encode("utf-8"))


def test_sigkilled_worker_is_recovered_by_the_reaper_and_every_session_archived_once(world):
    db, procs = world(
        postgres=using_postgres(),
        redis=using_redis(),
        BULKOPS_CHUNK_SIZE="10",
        BULKOPS_STALE_AFTER_SECONDS="3",
    )
    seed(procs, sessions=1000, size=SIZE)
    victim = procs.worker("worker-victim")
    out = procs.run("bulk", "archive", "--user", "alice", "--filter", "status=active")
    op_id = out.split()[1].rstrip(":")
    pause = db.pause_after(op_id, 100)  # the victim stops at its next chunk: mid-run
    try:
        at_kill = db.operation(op_id)
        assert at_kill["status"] == "running" and 0 < at_kill["processed"] < 1000, at_kill
        procs.kill(victim)
    finally:
        pause.close()
    killed = time.monotonic()
    procs.worker("worker-rescuer")
    wait_until(lambda: db.operation(op_id)["status"] != "running", "the rescuer to finish")
    recovered_after = time.monotonic() - killed

    op = db.operation(op_id)
    assert (op["status"], op["processed"], op["succeeded"]) == ("completed", 1000, 1000), op
    assert (op["skipped"], op["failed"], op["cancelled"], op["attempts"]) == (0, 0, 0, 2), op
    outcomes = db.query(
        "SELECT outcome, COUNT(*) FROM bulkops_bulkoperationitem WHERE operation_id = %s "
        "GROUP BY outcome",
        op_id,
    )
    assert outcomes == [("succeeded", 1000)]
    assert_task_rows_lost_then_successful(db, procs)
    assert_archived_exactly_once(db, sessions=1000)
    print(
        f"\n[crash] killed at {at_kill['processed']}/1000; the rescuer finished "
        f"{recovered_after:.2f} s after the kill (stale after 3 s)"
    )


def test_sigterm_finishes_the_chunk_and_hands_the_operation_to_the_next_worker(world):
    # Chunks of exactly 10 (not time-boxed: on a loaded machine the sizer takes fewer),
    # so a processed count that is a multiple of 10 shows the chunk in progress finished.
    db, procs = world(
        postgres=using_postgres(),
        redis=using_redis(),
        BULKOPS_CHUNK_SIZE="10",
        BULKOPS_CHUNK_SECONDS="0",
    )
    seed(procs, sessions=1000, size=SIZE)
    first = procs.worker("worker-first")
    out = procs.run("bulk", "archive", "--user", "alice", "--filter", "status=active")
    op_id = out.split()[1].rstrip(":")
    pause = db.pause_after(op_id, 50)
    try:
        os.killpg(first.pid, signal.SIGTERM)
    finally:
        pause.close()
    assert first.wait(timeout=60) == 0  # a clean exit, after the chunk in progress
    op = db.operation(op_id)
    assert op["status"] == "running" and 0 < op["processed"] < 1000, op
    assert op["processed"] % 10 == 0 and op["attempts"] == 0, op  # handed off, not crashed
    queued = db.scalar(
        "SELECT COUNT(*) FROM django_tasks_database_dbtaskresult WHERE status = %s", "READY"
    )
    assert queued == 1
    procs.worker("worker-next")
    wait_until(lambda: db.operation(op_id)["status"] != "running", "the next worker to finish")
    op = db.operation(op_id)
    assert (op["status"], op["succeeded"], op["attempts"]) == ("completed", 1000, 1), op
