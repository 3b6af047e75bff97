"""The parts of a deployed ``db_worker`` that the in-process test worker
(``support.helpers.run_worker``) leaves out, each in a real worker process: the reaper
thread, and ``close_old_connections`` between drains. (The third, the NOTIFY listener,
is ``integration/test_wakeup.py``.)"""

from __future__ import annotations

import re

import pytest

from bulkops.tests.support.processes import (
    MANAGE,
    seed,
    session_ids,
    using_postgres,
    wait_until,
)

pytestmark = pytest.mark.processes

#: Seconds without a heartbeat before the reaper takes an operation for a dead one: long
#: enough for the rescuer to start (and run its start-up pass) before it is stale.
STALE = 15
SESSIONS = 1000
#: The worker's poll interval in the connection test: it only ever wakes on NOTIFY.
LONG_POLL = "60"


def full_log(procs, name: str) -> str:
    return (procs.tmp_path / f"{name}.log").read_text()


def start_close(procs, ids: list[str]) -> str:
    out = procs.run("bulk", "close", "--user", "alice", "--ids", *ids)
    return re.search(r"Operation (op-[0-9a-f]+)", out).group(1)


def test_a_running_workers_reaper_thread_resumes_the_operation_of_a_worker_that_died(world):
    db, procs = world(
        postgres=using_postgres(),
        redis=False,
        BULKOPS_CHUNK_SIZE="1",  # a thousand chunks: the victim is killed mid-run
        BULKOPS_STALE_AFTER_SECONDS=str(STALE),
    )
    seed(procs, sessions=SESSIONS)
    op_id = start_close(procs, session_ids(SESSIONS))
    victim = procs.worker("victim")
    wait_until(lambda: db.operation(op_id)["processed"] >= 20, "the victim's first chunks")
    procs.kill(victim)  # SIGKILL, mid-run
    at_kill = db.operation(op_id)
    # The rescuer is up, its start-up reaper pass done, before the operation is stale:
    # only its reaper thread can find it so later.
    rescuer = procs.worker("rescuer")
    before = db.operation(op_id)
    wait_until(lambda: db.operation(op_id)["status"] == "completed", "the rescuer to finish")

    assert at_kill["status"] == "running" and at_kill["processed"] < SESSIONS, at_kill
    assert before == at_kill, (at_kill, before)  # not taken by the start-up pass
    op = db.operation(op_id)
    assert (op["processed"], op["succeeded"], op["failed"], op["attempts"]) == (
        SESSIONS, SESSIONS, 0, 2,
    )  # fmt: skip
    closed = db.scalar("SELECT COUNT(*) FROM bulkops_session WHERE status = %s", "closed")
    assert closed == SESSIONS
    log = full_log(procs, "rescuer")
    ready = log.index("worker rescuer ready")
    assert re.search(rf"operation {op_id} \(.*\) enqueued again by the reaper", log[ready:]), log
    assert rescuer.poll() is None, log


@pytest.mark.postgres
def test_a_connection_lost_while_the_worker_waits_is_replaced_at_its_next_drain(world):
    """A connection the worker kept through its wait that died meanwhile never reaches a
    task: ``close_old_connections`` (the library's, around every poll) gives it back,
    and the pool checks a connection as it hands it out (without a pool,
    ``DB_CONN_MAX_AGE=0`` closes it). Used as it was, it would fail the next poll, which
    the worker logs as "cannot reach the database" before it backs off and reconnects."""
    db, procs = world(postgres=True, redis=False, DB_CONN_MAX_AGE="0")
    seed(procs, sessions=10)
    argv = [*MANAGE, "db_worker", "--no-reload", "--no-startup-delay", "--interval", LONG_POLL]
    worker = procs.start("worker", [*argv, "--reap-interval", "0", "--worker-id", "worker"])
    wait_until(lambda: "by PostgreSQL NOTIFY" in procs.log("worker"), "the worker to listen")
    first = start_close(procs, session_ids(5))
    wait_until(lambda: db.operation(first)["status"] == "completed", "the first operation")
    # The worker's own connection (not its listener's), idle: the worker is in its wait.
    idle = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
        "AND query NOT LIKE 'LISTEN%%' AND state = 'idle' "
        "AND state_change < now() - interval '1 second'"
    )
    kept = wait_until(lambda: db.query(idle), "the worker to wait with its connection")
    # Every one it kept (with the connection pool, each connection the pool holds).
    for (pid,) in kept:
        assert db.scalar("SELECT pg_terminate_backend(%s)", pid) is True

    second = start_close(procs, session_ids(10)[5:])
    wait_until(lambda: db.operation(second)["status"] == "completed", "the second operation")

    op = db.operation(second)
    assert (op["succeeded"], op["failed"], op["attempts"], op["error"]) == (5, 0, 1, "")
    closed = db.scalar("SELECT COUNT(*) FROM bulkops_session WHERE status = %s", "closed")
    assert closed == 10
    assert "cannot reach the database" not in full_log(procs, "worker")
    assert worker.poll() is None, procs.log("worker")
