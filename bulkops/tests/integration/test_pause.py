"""Pause a running operation over HTTP while one ``db_worker`` runs it, resume it over
HTTP, and let another ``db_worker`` finish it (issue 10 §4): the first worker stops at
a chunk boundary and lets go of the task; the second runs only the pending items, so
every session is closed exactly once and the counters add up."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading

import pytest

from bulkops.tests.support.processes import (
    Watcher,
    http,
    seed,
    session_ids,
    using_postgres,
    using_redis,
    wait_until,
)

pytestmark = pytest.mark.processes
SESSIONS, CHUNK = 1000, 10


def pause_mid_run(db, procs, worker, base: str, token: str, op_id: str) -> dict:
    """POST …/pause while ``worker`` is between chunks, past 100 items: hold what its
    next chunk needs (``pause_after``), stop the process (SIGSTOP), let go of the lock
    so the pause request gets in, then let the worker go on. Deterministic: the worker
    sees the pause at its next chunk boundary whatever the timing."""
    answer: dict = {}

    def post_pause() -> None:
        answer["response"] = http(base, "POST", f"/api/bulk/operations/{op_id}/pause", token)

    held = db.pause_after(op_id, 100)
    try:
        os.killpg(worker.pid, signal.SIGSTOP)
    finally:
        held.close()
    thread = threading.Thread(target=post_pause)
    thread.start()
    try:
        # SQLite: nothing else holds the write lock, the pause commits. PostgreSQL: the
        # stopped worker's backend may have been granted the operation's row lock; the
        # pause then waits in line for it (FIFO) and gets it after the worker's chunk.
        wait_until(
            lambda: "response" in answer or (db.postgres and lock_waiters(db) > 0),
            "the pause request to commit or wait for the row lock",
        )
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    thread.join(timeout=60)
    status, body = answer["response"]
    assert status == 202, body
    return body


def lock_waiters(db) -> int:
    return db.scalar(
        "SELECT COUNT(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )


def task_runs(db) -> list[tuple[list, object]]:
    """(worker ids, return value) of every task row, oldest first."""
    rows = db.query(
        "SELECT worker_ids, return_value FROM django_tasks_database_dbtaskresult "
        "ORDER BY enqueued_at"
    )
    if db.postgres:  # jsonb comes back decoded; SQLite's JSON is text
        return [tuple(row) for row in rows]
    # A row whose task has not returned yet holds NULL (None) there: not yet JSON.
    return [(json.loads(w), None if r is None else json.loads(r)) for w, r in rows]


def items_by_outcome(db, op_id: str) -> dict[str, int]:
    return dict(
        db.query(
            "SELECT outcome, COUNT(*) FROM bulkops_bulkoperationitem WHERE operation_id = %s "
            "GROUP BY outcome",
            op_id,
        )
    )


def closed_sessions(db) -> dict:
    return dict(db.query("SELECT id, closed_at FROM bulkops_session WHERE status = 'closed'"))


def assert_paused_mid_run(db, op_id: str) -> tuple[dict, dict]:
    """Paused at a chunk boundary, past 100 items, the rest pending; the first worker's
    task returned "paused". Return the operation and the sessions closed so far."""
    wait_until(lambda: db.operation(op_id)["status"] == "paused", "the pause")
    paused = db.operation(op_id)
    done = paused["processed"]
    assert 100 <= done < SESSIONS and done % CHUNK == 0, paused
    assert paused["succeeded"] == done and paused["attempts"] == 0, paused
    assert items_by_outcome(db, op_id) == {"succeeded": done, "pending": SESSIONS - done}
    closed = closed_sessions(db)
    assert len(closed) == done
    wait_until(lambda: task_runs(db) == [(["worker-first"], "paused")], "the first task")
    return paused, closed


def assert_every_item_applied_once(db, op_id: str, closed_before: dict) -> None:
    op = db.operation(op_id)
    assert (op["status"], op["processed"], op["succeeded"]) == ("completed", SESSIONS, SESSIONS)
    assert (op["skipped"], op["failed"], op["cancelled"], op["attempts"]) == (0, 0, 0, 1), op
    assert items_by_outcome(db, op_id) == {"succeeded": SESSIONS}
    closed = closed_sessions(db)
    assert len(closed) == SESSIONS
    assert all(closed[sid] == at for sid, at in closed_before.items())  # not closed again
    wait_until(
        lambda: task_runs(db) == [(["worker-first"], "paused"), (["worker-second"], "completed")],
        "the second worker's task row",
    )


async def test_pause_on_one_worker_and_resume_on_another_applies_every_item_once(world):
    db, procs = world(postgres=using_postgres(), redis=using_redis(), BULKOPS_CHUNK_SIZE=str(CHUNK))
    token = (await asyncio.to_thread(seed, procs, sessions=SESSIONS))["token"]
    base = await asyncio.to_thread(procs.server, "daphne")
    first = await asyncio.to_thread(procs.worker, "worker-first")
    async with Watcher(base, token) as watcher:
        body = {"session_ids": session_ids(SESSIONS)}
        status, body = await asyncio.to_thread(
            http, base, "POST", "/api/bulk/sessions/close", token, body
        )
        assert status == 202, body
        op_id = body["operation_id"]
        answer = await asyncio.to_thread(pause_mid_run, db, procs, first, base, token, op_id)
        assert answer["status"] in ("running", "paused"), answer
        paused, closed_before = await asyncio.to_thread(assert_paused_mid_run, db, op_id)
        # The first worker let go of the task; stop it for good: another one resumes.
        await asyncio.to_thread(procs.kill, first, signal.SIGTERM)
        await asyncio.to_thread(procs.worker, "worker-second")
        status, resumed = await asyncio.to_thread(
            http, base, "POST", f"/api/bulk/operations/{op_id}/resume", token
        )
        assert (status, resumed["status"]) == (202, "pending"), resumed
        await asyncio.to_thread(
            wait_until, lambda: db.operation(op_id)["status"] == "completed", "the resumed run"
        )
        if using_redis():  # events cross processes through Redis only
            for kind in ("bulk_operation_paused", "bulk_operation_resumed"):
                await watcher.wait_for(op_id, kind)
            final = await watcher.wait_for(op_id, "bulk_operation_completed")
            assert final["succeeded"] == SESSIONS
    await asyncio.to_thread(assert_every_item_applied_once, db, op_id, closed_before)
    print(f"\n[pause] paused at {paused['processed']}/{SESSIONS}; resumed on another worker")
