"""(a) The embedded default as a user runs it: ``manage.py serve`` (daphne and the worker
in one process, in-memory channel layer, SQLite file) — a ``websockets`` client sees a
1000-session operation started over HTTP from start to end."""

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

pytestmark = pytest.mark.processes


async def test_serve_streams_started_progress_and_completed_to_a_websocket_client(world):
    db, procs = world(postgres=False, redis=False, BULKOPS_CHUNK_SIZE="100")
    user = await asyncio.to_thread(seed, procs, sessions=1000)
    base = await asyncio.to_thread(procs.server, "serve", embedded=True)
    ids = session_ids(1000)
    async with Watcher(base, user["token"]) as watcher:
        posted = time.monotonic()
        status, body = await asyncio.to_thread(
            http, base, "POST", "/api/bulk/sessions/close", user["token"], {"session_ids": ids}
        )
        assert status == 202, body
        answered_after = time.monotonic() - posted
        op_id = body["operation_id"]
        started = await watcher.wait_for(op_id, "bulk_operation_started")
        started_after = time.monotonic() - posted
        final = await watcher.wait_for(op_id, "bulk_operation_completed")
        completed_after = time.monotonic() - posted
    events = watcher.of(op_id)
    kinds = [e["type"] for e in events]
    assert kinds.index("bulk_operation_started") < kinds.index("bulk_operation_completed")
    assert 1 <= kinds.count("bulk_operation_progress") <= 10  # ten chunks, coalesced
    assert (started["status"], started["total"]) == ("running", 1000)
    assert (final["status"], final["processed"], final["succeeded"], final["progress"]) == (
        "completed",
        1000,
        1000,
        100,
    )
    versions = [e["version"] for e in events if e["type"].startswith("bulk_operation")]
    assert versions == sorted(versions)
    updated = [sid for e in events if e["type"] == "sessions_updated" for sid in e["session_ids"]]
    assert sorted(updated) == ids  # every committed chunk, each session once
    # The database agrees: the row is the truth, the events a view of it.
    op = await asyncio.to_thread(db.operation, op_id)
    assert (op["status"], op["processed"], op["succeeded"]) == ("completed", 1000, 1000)
    closed = await asyncio.to_thread(
        db.scalar, "SELECT COUNT(*) FROM bulkops_session WHERE status = %s", "closed"
    )
    assert closed == 1000
    print(
        f"\n[serve] POST→202 {answered_after:.3f} s, POST→started {started_after:.3f} s, POST→completed {completed_after:.3f} s"
    )
