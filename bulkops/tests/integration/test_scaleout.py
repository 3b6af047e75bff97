"""(b) Production layout: two daphne servers and two ``db_worker`` processes on
PostgreSQL and Redis — events cross processes through the Redis channel layer."""

from __future__ import annotations

import asyncio
import time

import pytest

from bulkops.tests.support.processes import (
    Watcher,
    http,
    seed,
    session_ids,
)

pytestmark = [pytest.mark.processes, pytest.mark.postgres, pytest.mark.redis]


async def test_events_of_a_worker_process_reach_clients_of_both_servers(world):
    db, procs = world(postgres=True, redis=True, BULKOPS_CHUNK_SIZE="100")
    user = await asyncio.to_thread(seed, procs, sessions=1000)
    server_a = await asyncio.to_thread(procs.server, "daphne-a")
    server_b = await asyncio.to_thread(procs.server, "daphne-b")
    for name in ("worker-1", "worker-2"):
        procs.worker(name)
    ids = session_ids(1000)
    async with Watcher(server_a, user["token"]) as on_a, Watcher(server_b, user["token"]) as on_b:
        posted = time.monotonic()
        status, body = await asyncio.to_thread(
            http, server_a, "POST", "/api/bulk/sessions/close", user["token"], {"session_ids": ids}
        )
        assert status == 202, body
        answered_after = time.monotonic() - posted
        op_id = body["operation_id"]
        await on_a.wait_for(op_id, "bulk_operation_started")
        started_after = time.monotonic() - posted
        final_a = await on_a.wait_for(op_id, "bulk_operation_completed")
        completed_after = time.monotonic() - posted
        final_b = await on_b.wait_for(op_id, "bulk_operation_completed")
    events = on_a.of(op_id)
    kinds = [e["type"] for e in events]
    assert kinds.count("bulk_operation_started") == 1
    assert kinds.count("bulk_operation_completed") == 1
    assert kinds.count("bulk_operation_progress") >= 1
    # Every chunk's sessions_updated arrived, so no event was lost on the way.
    updated = [sid for e in events if e["type"] == "sessions_updated" for sid in e["session_ids"]]
    assert sorted(updated) == ids
    versions = [e["version"] for e in events if e["type"].startswith("bulk_operation")]
    assert versions == sorted(versions)
    assert final_b == final_a
    assert (final_a["status"], final_a["processed"], final_a["succeeded"]) == (
        "completed",
        1000,
        1000,
    )
    op = await asyncio.to_thread(db.operation, op_id)
    assert (op["status"], op["succeeded"], op["attempts"]) == ("completed", 1000, 1)
    ran_by = await asyncio.to_thread(
        db.scalar,
        "SELECT worker_ids::text FROM django_tasks_database_dbtaskresult WHERE status = %s",
        "SUCCESSFUL",
    )
    assert "worker-" in ran_by  # a worker process, not a server, ran it
    closed = await asyncio.to_thread(
        db.scalar, "SELECT COUNT(*) FROM bulkops_session WHERE status = %s", "closed"
    )
    assert closed == 1000
    print(
        f"\n[scale-out] POST→202 {answered_after:.3f} s, POST→started {started_after:.3f} s, "
        f"POST→completed {completed_after:.3f} s (server A)"
    )
