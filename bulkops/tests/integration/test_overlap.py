"""(e) Overlapping operations on two worker processes — close and delete over the same
sessions: no deadlock, every session in one consistent state, counters that add up.

The overlap is forced, not hoped for. Worker 1 runs the close until it has done a few
chunks; a lock on what its next chunk needs (``ProcessDB.pause_after``: the operation's
row on PostgreSQL, the write lock on SQLite) keeps it at a chunk boundary holding
nothing, where it is stopped (SIGSTOP) before the lock is let go. The delete then starts
on worker 2 and runs past the close's position while the close is mid-run; worker 1 is
continued and both run on together. The close's items show the interleaving: those it
did before it stopped succeeded, those the delete reached first failed ``deleted``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bulkops.tests.support.processes import (
    seed,
    session_ids,
    using_postgres,
    using_redis,
    wait_until,
)

pytestmark = pytest.mark.processes
FINISHED = ("completed", "partial", "failed", "cancelled")
SESSIONS = 1000
#: Close items done before worker 1 is stopped, and delete items done before it goes on.
CLOSE_FIRST = 100
DELETE_AHEAD = 500


def process_state(pid: int) -> str:
    """The kernel's one-letter state of ``pid`` (``T``: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def start(procs, action: str) -> str:
    out = procs.run("bulk", action, "--user", "alice", "--ids", *session_ids(SESSIONS))
    return out.split()[1].rstrip(":")


def item_outcomes(db, operation_id: str) -> dict[str, tuple[str, str]]:
    rows = db.query(
        "SELECT session_id, outcome, reason FROM bulkops_bulkoperationitem WHERE operation_id = %s",
        operation_id,
    )
    return {sid: (outcome, reason) for sid, outcome, reason in rows}


def stop_at_a_chunk_boundary(db, worker, operation_id: str) -> dict:
    """Stop ``worker`` (SIGSTOP) where ``operation_id`` has done ``CLOSE_FIRST`` items or
    a chunk more, holding nothing; return the operation as it stopped."""
    boundary = db.pause_after(operation_id, CLOSE_FIRST)
    try:
        os.killpg(worker.pid, signal.SIGSTOP)
        wait_until(lambda: process_state(worker.pid) == "T", "worker 1 to stop")
    finally:
        boundary.close()
    return db.operation(operation_id)


def assert_consistent(db, close_id: str, delete_id: str) -> dict:
    """Both ran every item, the delete won every session, and each session's state is
    what the close's item says; return the close's items."""
    close, delete = db.operation(close_id), db.operation(delete_id)
    for op in (close, delete):
        assert op["error"] == "", op
        assert op["processed"] == op["total"] == SESSIONS, op
        assert op["succeeded"] + op["skipped"] + op["failed"] + op["cancelled"] == SESSIONS, op
    # Delete wins every session; close either got there first or found it deleted.
    assert (delete["status"], delete["succeeded"]) == ("completed", SESSIONS)
    assert close["succeeded"] + close["failed"] == SESSIONS
    items = {op_id: item_outcomes(db, op_id) for op_id in (close_id, delete_id)}
    for op_id, op in ((close_id, close), (delete_id, delete)):
        outcomes = [o for o, _ in items[op_id].values()]
        assert outcomes.count("succeeded") == op["succeeded"]
        assert outcomes.count("failed") == op["failed"]
    sessions = db.query(
        "SELECT id, status, deleted_at IS NOT NULL, closed_at IS NOT NULL FROM bulkops_session"
    )
    assert len(sessions) == SESSIONS
    for sid, status, deleted, closed_at in sessions:
        assert deleted, sid
        closed = items[close_id][sid][0] == "succeeded"
        assert (status == "closed") == closed == bool(closed_at), sid
    return items[close_id]


def test_delete_started_while_close_is_mid_run_overlaps_it_and_both_end_consistent(world):
    db, procs = world(
        postgres=using_postgres(),
        redis=using_redis(),
        BULKOPS_CHUNK_SIZE="20",
        # Worker 1 is stopped on purpose: no reaper may take its operation for a dead one.
        BULKOPS_STALE_AFTER_SECONDS="600",
    )
    seed(procs, sessions=SESSIONS)
    close_id = start(procs, "close")
    worker_1 = procs.worker("worker-1")
    stopped = stop_at_a_chunk_boundary(db, worker_1, close_id)
    try:
        delete_id = start(procs, "delete")
        procs.worker("worker-2")
        wait_until(
            lambda: db.operation(delete_id)["processed"] >= DELETE_AHEAD,
            "the delete to run past the stopped close",
        )
        close_meanwhile, delete_meanwhile = db.operation(close_id), db.operation(delete_id)
    finally:
        os.killpg(worker_1.pid, signal.SIGCONT)
    wait_until(
        lambda: all(db.operation(o)["status"] in FINISHED for o in (close_id, delete_id)),
        "both operations to finish (a deadlock would stop here)",
    )

    # The overlap happened: the close was mid-run, and stayed exactly there, while the
    # delete started and ran past it.
    done_first = stopped["processed"]
    assert stopped["status"] == "running" and CLOSE_FIRST <= done_first < DELETE_AHEAD, stopped
    assert close_meanwhile == stopped, (stopped, close_meanwhile)
    assert delete_meanwhile["processed"] >= DELETE_AHEAD, delete_meanwhile
    close_items = assert_consistent(db, close_id, delete_id)
    # And the close's items show it: done before the stop, or found deleted after it.
    ids = session_ids(SESSIONS)
    assert {close_items[sid] for sid in ids[:done_first]} == {("succeeded", "")}
    assert {close_items[sid] for sid in ids[done_first:DELETE_AHEAD]} == {("failed", "deleted")}
    assert {r for o, r in close_items.values() if o == "failed"} == {"deleted"}
    close = db.operation(close_id)
    print(
        f"\n[overlap] close stopped at {done_first}, delete ran to "
        f"{delete_meanwhile['processed']} meanwhile; close succeeded {close['succeeded']}, "
        f"failed (deleted) {close['failed']}"
    )
