"""A small operation runs in the request, on a real daphne and a WebSocket client: the
202 already says ``completed``, no task is queued (no worker runs here), and the
client hears ``bulk_operation_completed`` — sent once the request committed."""

from __future__ import annotations

import asyncio

import pytest

from bulkops.tests.support.processes import (
    Watcher,
    http,
    seed,
    session_ids,
    using_postgres,
    using_redis,
)

pytestmark = pytest.mark.processes


def test_a_small_close_completes_in_the_request_and_its_events_reach_the_client(world):
    db, procs = world(
        postgres=using_postgres(), redis=using_redis(), BULKOPS_INLINE_MAX_SESSIONS="20"
    )
    user = seed(procs, sessions=3)
    base = procs.server("web-1")

    async def run():
        async with Watcher(base, user["token"]) as watcher:
            status, body = await asyncio.to_thread(
                http, base, "POST", "/api/bulk/sessions/close", user["token"],
                {"session_ids": session_ids(3)},
            )  # fmt: skip
            assert status == 202 and body["status"] == "completed", body
            completed = await watcher.wait_for(body["operation_id"], "bulk_operation_completed")
            kinds = [m["type"] for m in watcher.of(body["operation_id"])]
            return body, completed, kinds

    body, completed, kinds = asyncio.run(run())
    assert kinds[0] == "bulk_operation_started"
    assert (completed["status"], completed["succeeded"], completed["progress"]) == (
        "completed",
        3,
        100,
    )
    assert db.operation(body["operation_id"])["status"] == "completed"
    assert db.scalar("SELECT COUNT(*) FROM bulkops_session WHERE status = 'closed'") == 3
    assert db.scalar("SELECT COUNT(*) FROM django_tasks_database_dbtaskresult") == 0
