"""(d) Cancel mid-run over HTTP: the worker stops at the next chunk boundary, the rest
is ``cancelled``, nothing past the boundary is touched, and the final event is sent."""

from __future__ import annotations

import asyncio

import pytest

from bulkops.tests.support.processes import (
    Watcher,
    content_for,
    http,
    seed,
    session_ids,
    using_postgres,
    using_redis,
    wait_until,
)

SIZE = 64 * 1024


pytestmark = pytest.mark.processes


async def test_cancel_mid_run_stops_at_a_chunk_boundary_and_sends_the_final_event(world):
    db, procs = world(
        postgres=using_postgres(),
        redis=using_redis(),
        BULKOPS_CHUNK_SIZE="10",
        BULKOPS_CHUNK_SECONDS="0",  # fixed chunks of 10: "whole chunks only" below
    )
    user = await asyncio.to_thread(seed, procs, sessions=1000, size=SIZE)
    base = await asyncio.to_thread(procs.server, "serve", embedded=True)
    token = user["token"]
    async with Watcher(base, token) as watcher:
        status, body = await asyncio.to_thread(
            http,
            base,
            "POST",
            "/api/bulk/sessions/archive",
            token,
            {"session_ids": session_ids(1000)},
        )
        assert status == 202, body
        op_id = body["operation_id"]
        await asyncio.to_thread(
            wait_until, lambda: db.operation(op_id)["processed"] >= 20, "the first chunks"
        )
        status, body = await asyncio.to_thread(
            http, base, "POST", f"/api/bulk/operations/{op_id}/cancel", token
        )
        assert status == 202, body
        final = await watcher.wait_for(op_id, "bulk_operation_cancelled")
    op = await asyncio.to_thread(db.operation, op_id)
    assert op["status"] == final["status"] == "cancelled"
    assert op["error"] == "Cancelled on request."
    assert 20 <= op["succeeded"] < 1000 and op["cancelled"] > 0
    assert op["succeeded"] + op["cancelled"] == op["processed"] == 1000
    assert (final["succeeded"], final["cancelled"]) == (op["succeeded"], op["cancelled"])
    assert op["succeeded"] % 10 == 0  # whole chunks only
    items = dict(
        await asyncio.to_thread(
            db.query,
            "SELECT session_id, outcome FROM bulkops_bulkoperationitem WHERE operation_id = %s",
            op_id,
        )
    )
    sessions = await asyncio.to_thread(
        db.query, "SELECT id, status, content FROM bulkops_session ORDER BY id"
    )
    for sid, status, content in sessions:
        if items[sid] == "succeeded":
            assert (status, content) == ("archived", ""), sid
        else:
            assert items[sid] == "cancelled", sid
            assert (status, content) == ("active", content_for(int(sid[2:]), SIZE)), sid
    print(f"\n[cancel] stopped after {op['succeeded']}/1000")


@pytest.mark.postgres  # SQLite has one writer: its cancel waits for the run (docs/operations.md)
async def test_cancel_of_a_running_all_or_nothing_archive_over_http_changes_nothing(world):
    db, procs = world(postgres=True, redis=using_redis(), BULKOPS_CHUNK_SIZE="10",
                      BULKOPS_CHUNK_SECONDS="0")  # fmt: skip
    user = await asyncio.to_thread(seed, procs, sessions=1000, size=SIZE)
    base = await asyncio.to_thread(procs.server, "serve", embedded=True)
    token = user["token"]
    async with Watcher(base, token) as watcher:
        status, body = await asyncio.to_thread(
            http, base, "POST", "/api/bulk/sessions/archive", token,
            {"session_ids": session_ids(1000), "atomic": True},
        )  # fmt: skip
        assert status == 202, body
        op_id = body["operation_id"]
        await asyncio.to_thread(
            wait_until, lambda: db.operation(op_id)["status"] == "running", "the run"
        )
        await asyncio.sleep(0.3)  # a few chunks into the one transaction
        status, body = await asyncio.to_thread(
            http, base, "POST", f"/api/bulk/operations/{op_id}/cancel", token
        )
        assert status == 202, body
        final = await watcher.wait_for(op_id, "bulk_operation_cancelled")
    op = await asyncio.to_thread(db.operation, op_id)
    assert op["status"] == final["status"] == "cancelled"
    assert (op["succeeded"], op["cancelled"]) == (0, 1000)
    outcomes = await asyncio.to_thread(
        db.query,
        "SELECT outcome, count(*) FROM bulkops_bulkoperationitem WHERE operation_id = %s"
        " GROUP BY outcome",
        op_id,
    )
    assert outcomes == [("cancelled", 1000)]
    sessions = await asyncio.to_thread(
        db.query, "SELECT id, status, content FROM bulkops_session ORDER BY id"
    )
    assert len(sessions) == 1000
    for sid, status, content in sessions:
        assert (status, content) == ("active", content_for(int(sid[2:]), SIZE)), sid
