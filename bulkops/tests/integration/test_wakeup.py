"""Workers are woken by an enqueue instead of waiting for their next poll.

Both tests give the worker a 60 s poll interval and allow 30 s for the operation to
finish: it can only finish in time if the enqueue woke the worker.
"""

from __future__ import annotations

import re

import pytest

from bulkops.tests.support.processes import (
    MANAGE,
    http,
    seed,
    session_ids,
    wait_until,
)

pytestmark = pytest.mark.processes

LONG_POLL = "60"


def _completed(db, operation_id: str) -> bool:
    return db.operation(operation_id)["status"] == "completed"


def test_serve_wakes_its_in_process_worker_on_enqueue(world):
    db, procs = world(postgres=False, redis=False, BULKOPS_WORKER_INTERVAL=LONG_POLL)
    user = seed(procs, sessions=10)
    base = procs.server("serve", embedded=True)
    wait_until(lambda: f"poll every {LONG_POLL}" in procs.log("serve"), "the worker to be ready")

    status, body = http(
        base, "POST", "/api/bulk/sessions/close", user["token"], {"session_ids": session_ids(10)}
    )
    assert status == 202, body
    wait_until(lambda: _completed(db, body["operation_id"]), "the operation", timeout=30)
    assert db.scalar("SELECT COUNT(*) FROM bulkops_session WHERE status = %s", "closed") == 10


@pytest.mark.postgres
def test_db_worker_is_woken_by_postgres_notify_from_another_process(world):
    db, procs = world(postgres=True, redis=False)
    user = seed(procs, sessions=10)
    worker = [*MANAGE, "db_worker", "--no-reload", "--no-startup-delay", "--interval", LONG_POLL]
    procs.start("worker", [*worker, "--reap-interval", "0"])
    wait_until(lambda: "by PostgreSQL NOTIFY" in procs.log("worker"), "the worker to listen")

    # Another process (the bulk command) creates the operation and commits it.
    out = procs.run("bulk", "close", "--user", user["username"], "--ids", *session_ids(10))
    operation_id = re.search(r"Operation (op-[0-9a-f]+)", out).group(1)
    wait_until(lambda: _completed(db, operation_id), "the operation", timeout=30)
    assert db.scalar("SELECT COUNT(*) FROM bulkops_session WHERE status = %s", "closed") == 10
