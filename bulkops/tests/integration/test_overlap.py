"""(e) Overlapping operations on two worker processes — close and delete over the same
sessions: no deadlock, every session in one consistent state, counters that add up."""

from __future__ import annotations

import pytest

from bulkops.tests.support.processes import (
    seed,
    using_postgres,
    using_redis,
    wait_until,
)

pytestmark = pytest.mark.processes
FINISHED = ("completed", "partial", "failed", "cancelled")


def test_close_and_delete_over_the_same_sessions_end_consistent(world):
    db, procs = world(postgres=using_postgres(), redis=using_redis(), BULKOPS_CHUNK_SIZE="20")
    seed(procs, sessions=1000)
    selection = ["--user", "alice", "--filter", "status=active"]
    close_id = procs.run("bulk", "close", *selection).split()[1].rstrip(":")
    delete_id = procs.run("bulk", "delete", *selection).split()[1].rstrip(":")
    procs.worker("worker-1")
    procs.worker("worker-2")
    wait_until(
        lambda: all(db.operation(o)["status"] in FINISHED for o in (close_id, delete_id)),
        "both operations to finish (a deadlock would stop here)",
    )
    close, delete = db.operation(close_id), db.operation(delete_id)
    for op in (close, delete):
        assert op["error"] == "", op
        assert op["processed"] == op["total"] == 1000, op
        assert op["succeeded"] + op["skipped"] + op["failed"] + op["cancelled"] == 1000, op
    # Delete wins every session; close either got there first or found it deleted.
    assert (delete["status"], delete["succeeded"]) == ("completed", 1000)
    assert close["succeeded"] + close["failed"] == 1000
    items = {
        op_id: dict(
            (sid, (outcome, reason))
            for sid, outcome, reason in db.query(
                "SELECT session_id, outcome, reason FROM bulkops_bulkoperationitem "
                "WHERE operation_id = %s",
                op_id,
            )
        )
        for op_id in (close_id, delete_id)
    }
    for op_id, op in ((close_id, close), (delete_id, delete)):
        outcomes = [o for o, _ in items[op_id].values()]
        assert outcomes.count("succeeded") == op["succeeded"]
        assert outcomes.count("failed") == op["failed"]
    assert {r for o, r in items[close_id].values() if o == "failed"} <= {"deleted"}
    sessions = db.query(
        "SELECT id, status, deleted_at IS NOT NULL, closed_at IS NOT NULL FROM bulkops_session"
    )
    assert len(sessions) == 1000
    for sid, status, deleted, closed_at in sessions:
        assert deleted, sid
        closed = items[close_id][sid][0] == "succeeded"
        assert (status == "closed") == closed == bool(closed_at), sid
    print(f"\n[overlap] close succeeded {close['succeeded']}, failed (deleted) {close['failed']}")
