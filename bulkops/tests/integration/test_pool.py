"""PostgreSQL connections are pooled per process (``DATABASES[...]["OPTIONS"]["pool"]``):
daphne serves every request from a few long-lived connections, under its
one-thread-per-request model and under concurrent requests, and a ``db_worker`` runs its
tasks from the pool while its wake-up listener keeps a connection of its own."""

from __future__ import annotations

import threading

import pytest

from bulkops.tests.support.processes import MANAGE, http, seed, session_ids, wait_until

pytestmark = [pytest.mark.processes, pytest.mark.postgres]

POOL_MAX = 3
#: The server's connections say who they are (libpq reads PGAPPNAME).
SERVER = {"PGAPPNAME": "bulkops-web-1"}


def backends(db) -> set[int]:
    """The PostgreSQL backends the server holds open."""
    rows = db.query(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        db.name,
        SERVER["PGAPPNAME"],
    )
    return {pid for (pid,) in rows}


def test_daphne_answers_from_a_bounded_pool_of_connections_it_keeps(world):
    db, procs = world(postgres=True, redis=False, DB_POOL_MAX_SIZE=str(POOL_MAX))
    user = seed(procs, sessions=3)
    base = procs.server("web-1", env=SERVER)
    assert http(base, "GET", "/api/bulk/sessions/info", user["token"])[0] == 200
    # The request is over, its connection stays open (without a pool it is closed).
    kept = wait_until(lambda: backends(db), "a pooled connection to stay open")

    for _ in range(20):
        assert http(base, "GET", "/api/bulk/sessions/info", user["token"])[0] == 200
    assert kept <= backends(db)  # the same backends served them: no reconnection

    statuses: list[int] = []

    def get() -> None:
        statuses.append(http(base, "GET", "/api/bulk/sessions/info", user["token"])[0])

    threads = [threading.Thread(target=get) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [200] * 12  # more requests than connections: they wait their turn
    assert len(backends(db)) <= POOL_MAX


def test_a_db_worker_runs_operations_from_the_pool_and_listens_on_its_own_connection(world):
    db, procs = world(postgres=True, redis=False, DB_POOL_MAX_SIZE="2")
    user = seed(procs, sessions=6)
    base = procs.server("web-1")
    worker = [*MANAGE, "db_worker", "--no-reload", "--no-startup-delay", "--interval", "60"]
    procs.start("worker", [*worker, "--reap-interval", "0"])
    wait_until(lambda: "by PostgreSQL NOTIFY" in procs.log("worker"), "the worker to listen")
    listening = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE 'LISTEN%%'"
    wait_until(lambda: db.scalar(listening, db.name) == 1, "the LISTEN connection")

    ids = session_ids(6)
    operations = []
    for pair in (ids[0:2], ids[2:4], ids[4:6]):
        status, body = http(base, "POST", "/api/bulk/sessions/close", user["token"],
                            {"session_ids": pair})  # fmt: skip
        assert status == 202 and body["status"] == "pending", body
        operations.append(body["operation_id"])
    # A 60 s poll: done in time only because each enqueue woke the worker.
    for operation_id in operations:
        wait_until(
            lambda op=operation_id: db.operation(op)["status"] == "completed",
            "the operation",
            timeout=30,
        )
    assert db.scalar("SELECT COUNT(*) FROM bulkops_session WHERE status = 'closed'") == 6
    assert db.scalar(listening, db.name) == 1
