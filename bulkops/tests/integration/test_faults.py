"""Real faults (issue 12): the database restarting, a connection cut mid-chunk, Redis
going away, an export target that is full or read-only. Each test runs real daphne
and ``db_worker`` processes and reads the database afterwards: no item applied twice,
no session lost, no operation stuck.

PostgreSQL restarts and Redis outages use instances of the test's own
(``support.faults``), never the shared servers. Figures are printed (``-s`` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest

from bulkops.actions.archive import decompress_content
from bulkops.realtime.consumers import CLOSE_TRY_AGAIN_LATER
from bulkops.tests.support.faults import (
    DedicatedDB,
    ItemLock,
    dedicated_postgres,
    dedicated_redis,
    tiny_filesystem,
)
from bulkops.tests.support.processes import (
    WAIT,
    LiveEventsUnavailable,
    Processes,
    Watcher,
    content_for,
    process_env,
    seed,
    session_ids,
    using_postgres,
    using_redis,
    wait_until,
)

pytestmark = pytest.mark.processes

SIZE = 200  # characters per session: small content, many chunks
CHUNK = 100
STALE = 3  # BULKOPS_STALE_AFTER_SECONDS: how soon the reaper resumes a dead run
#: A request or a WebSocket not answered in this long is hung (a ceiling, not a window:
#: every wait ends with the answer; how long answers took is printed, not asserted).
HANG = 30.0
#: Seconds Redis stays away.
OUTAGE = 6.0


# --- helpers ----------------------------------------------------------------------------------
def raw(base: str, method: str, path: str, token: str, body=None) -> dict:
    """One request, whatever it answers: {status, type, body, seconds} (status 0 when
    no answer came in ``HANG`` seconds or the connection failed)."""
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=HANG) as response:
            status, kind, text = (
                response.status,
                response.headers.get("Content-Type"),
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        status, kind, text = exc.code, exc.headers.get("Content-Type"), exc.read()
    except OSError as exc:
        status, kind, text = 0, None, repr(exc).encode()
    return {
        "status": status,
        "type": kind or "",
        "body": text.decode("utf-8", "replace"),
        "seconds": time.monotonic() - started,
    }


def full_log(procs: Processes, name: str) -> str:
    return (procs.tmp_path / f"{name}.log").read_text()


def json_of(answer: dict):
    assert answer["type"].startswith("application/json"), answer
    return json.loads(answer["body"])


def redis_prefix() -> str:
    return f"{os.environ.get('REDIS_PREFIX', 'faults')}-{secrets.token_hex(3)}"


def item_outcomes(db, operation_id: str) -> dict[str, int]:
    rows = db.query(
        "SELECT outcome, COUNT(*) FROM bulkops_bulkoperationitem WHERE operation_id = %s "
        "GROUP BY outcome",
        operation_id,
    )
    return dict(rows)


def placeholders(values: list) -> str:
    return ", ".join(["%s"] * len(values))


def assert_archived_exactly_once(db, ids: list[str]) -> None:
    """Every session archived, its blob giving back the original, its recorded size the
    original's (an archive applied twice would have compressed the emptied content)."""
    rows = db.query(
        "SELECT id, status, content, archive_blob, archive_original_size FROM bulkops_session "
        f"WHERE id IN ({placeholders(ids)}) ORDER BY id",
        *ids,
    )
    assert [r[0] for r in rows] == sorted(ids)
    for sid, status, content, blob, original_size in rows:
        original = content_for(int(sid.split("-")[1]), SIZE)
        assert (status, content) == ("archived", ""), sid
        assert decompress_content(bytes(blob)) == original, sid
        assert original_size == len(original.encode("utf-8")), sid


def statuses(db, ids: list[str]) -> dict[str, int]:
    rows = db.query(
        f"SELECT status, COUNT(*) FROM bulkops_session WHERE id IN ({placeholders(ids)}) "
        "GROUP BY status",
        *ids,
    )
    return dict(rows)


def start_archive(base: str, token: str) -> str:
    answer = raw(
        base, "POST", "/api/bulk/sessions/archive", token, {"filter": {"status": "active"}}
    )
    assert answer["status"] == 202, answer
    return json_of(answer)["operation_id"]


def finished(db, operation_id: str, timeout: float = WAIT) -> dict:
    wait_until(
        lambda: db.operation(operation_id)["status"] not in ("pending", "running"),
        f"{operation_id} to finish",
        timeout,
    )
    return db.operation(operation_id)


def poll_while_down(base: str, token: str, operation_id: str, *, seconds: float) -> list[dict]:
    """The API's answers to a status poll, over ``seconds`` of an outage."""
    answers = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answers.append(raw(base, "GET", f"/api/bulk/operations/{operation_id}/status", token))
        time.sleep(0.25)
    return answers


def wait_for_api_path(base: str, token: str, path: str) -> float:
    """Seconds until ``GET path`` answers 200 again."""
    started = time.monotonic()
    wait_until(lambda: raw(base, "GET", path, token)["status"] == 200, "the API")
    return time.monotonic() - started


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def own_postgres():
    """A PostgreSQL of this module's own, which its tests stop and start."""
    with dedicated_postgres() as server:
        yield server


@pytest.fixture
def pg_world(own_postgres, tmp_path):
    """``make(**env)`` → (database, processes) on a fresh database of ``own_postgres``;
    the server is running again and every process killed afterwards."""
    made: list[Processes] = []

    def make(**extra: str) -> tuple[DedicatedDB, Processes]:
        db = DedicatedDB(own_postgres, f"faults_{secrets.token_hex(4)}")
        redis = redis_prefix() if using_redis() else None
        procs = Processes(tmp_path, process_env(db, tmp_path, redis=redis, **extra))
        made.append(procs)
        return db, procs

    yield make
    for procs in made:
        procs.stop_all()
    if not own_postgres.running():
        own_postgres.start()


# --- 1. PostgreSQL restarts mid-operation -----------------------------------------------------
#: How long PostgreSQL stays down, and a staleness window longer than that: nothing
#: resumes the operation in the first seconds after the restart, so what survived the
#: crash is read before any of it is redone.
PG_OUTAGE = 5.0
PG_STALE = 8


def crash_mid_chunk(db, procs: Processes, server, operation_id: str) -> tuple:
    """Start the worker; stop PostgreSQL (``-m immediate``) once its 31st chunk
    (s-03000…s-03099) has archived its sessions and waits on s-03050's item row, so a
    chunk with uncommitted changes is in flight. Return (worker, operation before)."""
    lock = ItemLock(db, operation_id, "s-03050")
    try:
        worker = procs.worker("worker")
        lock.blocked_pid()
        before = db.operation(operation_id)
        server.stop()
    finally:
        lock.release()
    return worker, before


@pytest.mark.postgres  # an instance of its own: once is enough, in the PostgreSQL pass
@pytest.mark.timeout(180)
def test_postgres_restart_mid_chunk_the_same_worker_finishes_every_item_once(
    pg_world, own_postgres
):
    db, procs = pg_world(
        BULKOPS_CHUNK_SIZE=str(CHUNK),
        BULKOPS_CHUNK_SECONDS="0",  # fixed chunks: the faults are placed at their edges
        BULKOPS_STALE_AFTER_SECONDS=str(PG_STALE),
        BULKOPS_MAX_SESSIONS_PER_OPERATION="10000",
    )
    user = seed(procs, sessions=10_000, size=SIZE)
    base = procs.server("daphne")
    op_id = start_archive(base, user["token"])
    worker, before = crash_mid_chunk(db, procs, own_postgres, op_id)
    down_at = time.monotonic()
    answers = poll_while_down(base, user["token"], op_id, seconds=PG_OUTAGE)
    own_postgres.start()
    up_at = time.monotonic()
    restarted, survived = db.query(
        "SELECT now(), processed FROM bulkops_bulkoperation WHERE id = %s", op_id
    )[0]
    api_back = wait_for_api_path(base, user["token"], f"/api/bulk/operations/{op_id}/status")
    op = finished(db, op_id)
    done_after = time.monotonic() - up_at

    assert worker.poll() is None, procs.log("worker")  # the same process, never restarted
    # The same process carried on. Whether it logged "cannot reach the database" depends
    # on when it asked for a connection: its pool checks each one as it hands it out and
    # replaces those the restart broke, so a poll after the restart sees no error at all.
    assert (op["status"], op["processed"], op["succeeded"]) == ("completed", 10_000, 10_000), op
    assert (op["skipped"], op["failed"], op["attempts"]) == (0, 0, 2), op
    assert item_outcomes(db, op_id) == {"succeeded": 10_000}
    assert_archived_exactly_once(db, session_ids(10_000))
    # What the crash took (the chunk in flight, and any chunk whose asynchronous commit
    # had not reached the WAL) was redone after the restart; nothing else was.
    redone = db.scalar("SELECT COUNT(*) FROM bulkops_session WHERE archived_at >= %s", restarted)
    assert redone == 10_000 - survived, (redone, survived)
    assert all(500 <= a["status"] < 600 for a in answers), answers  # answered, not hung
    print(
        f"\n[pg restart] stopped at {before['processed']}/10000 mid-chunk; down "
        f"{up_at - down_at:.1f} s; the API answered "
        f"{sorted({(a['status'], a['type']) for a in answers})} within "
        f"{max(a['seconds'] for a in answers):.2f} s; {survived} survived the crash "
        f"({(before['processed'] - survived) // CHUNK} committed chunk(s) lost: "
        f"synchronous_commit off), {redone} redone; API back {api_back:.2f} s and the "
        f"operation completed {done_after:.1f} s after the restart (stale after {PG_STALE} s)"
    )


@pytest.mark.postgres  # an instance of its own: once is enough, in the PostgreSQL pass
def test_api_answers_503_json_while_the_database_is_down_and_recovers_without_restart(
    pg_world, own_postgres
):
    db, procs = pg_world()
    user = seed(procs, sessions=10)
    base = procs.server("daphne")
    token, ids = user["token"], session_ids(10)
    requests = [
        ("GET", "/api/bulk/sessions/info", None),
        ("GET", "/api/bulk/operations/", None),
        ("POST", "/api/bulk/sessions/validate", {"action": "close", "session_ids": ids}),
        ("POST", "/api/bulk/sessions/close", {"session_ids": ids}),
    ]
    assert raw(base, "GET", "/api/bulk/sessions/info", token)["status"] == 200
    own_postgres.stop()
    try:
        answers = [(m, p, raw(base, m, p, token, body)) for m, p, body in requests]
    finally:
        own_postgres.start()
    back = wait_for_api_path(base, token, "/api/bulk/sessions/info")
    assert db.scalar("SELECT COUNT(*) FROM bulkops_bulkoperation") == 0  # nothing half-made
    print(
        f"\n[pg down] API answers: {[(m, p, a['status'], a['type']) for m, p, a in answers]}; "
        f"back {back:.2f} s after the restart, no server restart"
    )
    for method, path, answer in answers:
        assert (answer["status"], answer["type"].split(";")[0]) == (503, "application/json"), (
            f"{method} {path} answered {answer['status']} {answer['type']} while the database "
            f"was down; expected a 503 with a JSON body:\n{answer['body'][:300]}"
        )
        assert "detail" in json_of(answer)


# --- 2. a connection killed mid-chunk -----------------------------------------------------------
def start_archive_cli(procs: Processes) -> str:
    out = procs.run("bulk", "archive", "--user", "alice", "--filter", "status=active")
    return out.split()[1].rstrip(":")


@pytest.mark.postgres  # an instance of its own: once is enough, in the PostgreSQL pass
@pytest.mark.timeout(120)
def test_worker_connection_terminated_mid_chunk_rolls_the_chunk_back_and_resumes(pg_world):
    db, procs = pg_world(
        BULKOPS_CHUNK_SIZE=str(CHUNK),
        BULKOPS_CHUNK_SECONDS="0",  # fixed chunks: the faults are placed at their edges
        BULKOPS_STALE_AFTER_SECONDS=str(STALE),
        BULKOPS_MAX_SESSIONS_PER_OPERATION="2000",
    )
    seed(procs, sessions=2000, size=SIZE)
    op_id = start_archive_cli(procs)
    in_flight = session_ids(2000)[1000:1100]  # the chunk that will wait on s-01050's item
    lock = ItemLock(db, op_id, "s-01050")
    try:
        worker = procs.worker("worker")
        victim = lock.blocked_pid()
        assert db.scalar("SELECT pg_terminate_backend(%s)", victim) is True
        killed_at = time.monotonic()
        wait_until(
            lambda: not db.scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = %s", victim),
            "the backend to go",
        )
        # Rolled back: the chunk's sessions untouched, its items pending, 10 chunks counted.
        assert statuses(db, in_flight) == {"active": 100}
        assert item_outcomes(db, op_id) == {"succeeded": 1000, "pending": 1000}
        assert db.operation(op_id)["processed"] == 1000
    finally:
        lock.release()
    op = finished(db, op_id)
    resumed_after = time.monotonic() - killed_at

    assert worker.poll() is None, procs.log("worker")
    assert op["status"] == "completed", f"ended {op['status']}: {op['error']} ({op})"
    assert (op["processed"], op["succeeded"]) == (2000, 2000), op
    assert (op["skipped"], op["failed"], op["attempts"]) == (0, 0, 2), op
    assert item_outcomes(db, op_id) == {"succeeded": 2000}
    assert_archived_exactly_once(db, session_ids(2000))
    print(
        f"\n[terminate] backend {victim} terminated mid-chunk at 1000/2000; "
        f"completed {resumed_after:.1f} s later by the same worker (stale after {STALE} s)"
    )


# --- 3. Redis unavailable -----------------------------------------------------------------------
@pytest.fixture
def own_redis():
    """A redis-server of this test's own, which it stops and starts."""
    with dedicated_redis() as server:
        yield server


def stop_mid_run(db, redis, operation_id: str) -> None:
    """Stop Redis while the operation is between its 3rd and 4th chunk (one thread:
    a SQLite connection stays on the thread that opened it)."""
    pause = db.pause_after(operation_id, 300)
    try:
        redis.stop()
    finally:
        pause.close()


async def ws_first_reply(base: str, token: str) -> tuple[float, object]:
    """(seconds, the first answer to ``auth``: a message, or the close code)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    started = time.monotonic()
    url = base.replace("http", "ws", 1) + "/ws/bulk/"
    async with connect(url, origin=base, open_timeout=HANG) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        try:
            reply = json.loads(await asyncio.wait_for(ws.recv(), HANG))
        except ConnectionClosed as exc:
            reply = exc.rcvd.code if exc.rcvd else None
    return time.monotonic() - started, reply


async def subscribed_snapshot(watcher: Watcher, operation_id: str) -> dict:
    await watcher.connection.send(json.dumps({"type": "subscribe", "operation_id": operation_id}))

    def snapshot():
        return next((m["operation"] for m in watcher.messages if m["type"] == "subscribed"), None)

    return await asyncio.to_thread(wait_until, snapshot, "the subscribed snapshot")


async def post(base: str, token: str, path: str, body: dict) -> dict:
    return await asyncio.to_thread(raw, base, "POST", path, token, body)


async def while_redis_is_down(base: str, token: str, db, busy: str, ids: list[str]) -> dict:
    """The API while Redis is away: reads, validate and a new operation all answered
    (rate limits fail open), a new WebSocket told to come back later, and the worker
    finishes its operations."""
    answers = {
        "status": await asyncio.to_thread(
            raw, base, "GET", f"/api/bulk/operations/{busy}/status", token
        ),
        "info": await asyncio.to_thread(raw, base, "GET", "/api/bulk/sessions/info", token),
        "validate": await post(
            base, token, "/api/bulk/sessions/validate", {"action": "close", "session_ids": ids}
        ),
        "close": await post(base, token, "/api/bulk/sessions/close", {"session_ids": ids}),
    }
    codes = {name: a["status"] for name, a in answers.items()}
    assert codes == {"status": 200, "info": 200, "validate": 200, "close": 202}, answers
    started = json_of(answers["close"])["operation_id"]
    ws_seconds, ws_reply = await ws_first_reply(base, token)
    assert ws_reply == CLOSE_TRY_AGAIN_LATER or ws_reply["code"] == "unavailable", ws_reply
    for operation_id in (busy, started):
        op = await asyncio.to_thread(finished, db, operation_id)
        assert op["status"] == "completed", op
    return {
        "slowest": max(a["seconds"] for a in answers.values()),
        "started": started,
        "ws": (ws_reply, round(ws_seconds, 2)),
    }


#: How long a new client keeps reconnecting after Redis is back, as told to (1013).
RECONNECT_WITHIN = 15.0


@contextlib.asynccontextmanager
async def reconnecting_watcher(base: str, token: str) -> AsyncIterator[Watcher]:
    """A new WebSocket client once Redis is back, doing what ``unavailable`` asks of a
    client: reconnect a moment later (the server's channel layer may still hold a
    connection the outage broke). Past ``RECONNECT_WITHIN`` it fails as it would."""
    deadline = time.monotonic() + RECONNECT_WITHIN
    while True:
        watcher = Watcher(base, token)
        try:
            await watcher.__aenter__()
            break
        except LiveEventsUnavailable:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)
    try:
        yield watcher
    finally:
        await watcher.__aexit__(None, None, None)


# No ``redis`` marker: the test brings a redis-server of its own (not the pass's), so
# it runs in both passes, on either database.
@pytest.mark.timeout(150)
async def test_redis_outage_keeps_api_and_operations_working_and_events_resume(world, own_redis):
    db, procs = world(
        postgres=using_postgres(),
        redis=False,
        REDIS_URL=own_redis.url,
        REDIS_PREFIX=redis_prefix(),
        BULKOPS_CHUNK_SIZE=str(CHUNK),
        BULKOPS_CHUNK_SECONDS="0",  # fixed chunks: the faults are placed at their edges
    )
    user = await asyncio.to_thread(seed, procs, sessions=3000, size=SIZE)
    token, ids = user["token"], session_ids(3000)
    base = await asyncio.to_thread(procs.server, "daphne")
    await asyncio.to_thread(procs.worker, "worker")
    async with Watcher(base, token) as early:
        first = json_of(
            await post(base, token, "/api/bulk/sessions/close", {"session_ids": ids[:1000]})
        )
        await early.wait_for(first["operation_id"], "bulk_operation_completed")
        busy = json_of(
            await post(base, token, "/api/bulk/sessions/archive", {"session_ids": ids[1000:2000]})
        )["operation_id"]
        await asyncio.to_thread(stop_mid_run, db, own_redis, busy)
        down_at = time.monotonic()
        down = await while_redis_is_down(base, token, db, busy, ids[2000:2500])
        await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
        await asyncio.to_thread(own_redis.start)
        down_for = time.monotonic() - down_at
        async with reconnecting_watcher(base, token) as late:
            snapshot = await subscribed_snapshot(late, busy)
            after = json_of(
                await post(base, token, "/api/bulk/sessions/close", {"session_ids": ids[2500:]})
            )["operation_id"]
            await late.wait_for(after, "bulk_operation_completed")
            # The connection opened before the outage hears it too: the server's
            # subscription to Redis came back by itself.
            await early.wait_for(after, "bulk_operation_completed")
            events_back = time.monotonic() - down_at - down_for

    assert (snapshot["status"], snapshot["processed"], snapshot["succeeded"]) == (
        "completed",
        1000,
        1000,
    ), snapshot
    assert "rate limit of close not counted: the cache failed" in full_log(procs, "daphne")
    assert statuses(db, ids) == {"closed": 2000, "archived": 1000}
    for operation_id in (first["operation_id"], busy, down["started"], after):
        op = db.operation(operation_id)
        assert (op["status"], op["attempts"], op["failed"]) == ("completed", 1, 0), op
    print(
        f"\n[redis down] {down_for:.1f} s without Redis: slowest API answer "
        f"{down['slowest']:.2f} s, a new WebSocket got (answer, seconds) {down['ws']}; the operations ran "
        f"on; after the restart a new client had the snapshot and the next operation's "
        f"events within {events_back:.2f} s, and so had the connection opened before"
    )


# --- 4. export target full or read-only ----------------------------------------------------------
@pytest.fixture(params=["full", "read-only"])
def export_target(request, tmp_path):
    """BULKOPS_EXPORT_DIR on a 64 KiB tmpfs (an export of 1000 sessions is ~130 KiB),
    or on a read-only one (permission bits would not stop root). Requested before
    ``world``, so it is unmounted after the processes are gone."""
    with tiny_filesystem(tmp_path / "exports-fs", read_only=request.param == "read-only") as path:
        yield request.param, path


@pytest.mark.timeout(120)
def test_export_to_a_full_or_read_only_target_fails_at_once_and_serves_no_file(
    export_target, world
):
    kind, target = export_target
    db, procs = world(
        postgres=using_postgres(),
        redis=using_redis(),
        BULKOPS_EXPORT_DIR=str(target),
        BULKOPS_CHUNK_SIZE=str(CHUNK),
        BULKOPS_CHUNK_SECONDS="0",  # fixed chunks: the faults are placed at their edges
    )
    user = seed(procs, sessions=1000, size=SIZE)
    base = procs.server("daphne")
    procs.worker("worker")
    answer = raw(
        base, "POST", "/api/bulk/sessions/export-metadata", user["token"],
        {"session_ids": session_ids(1000), "format": "csv", "include_details": True},
    )  # fmt: skip
    assert answer["status"] == 202, answer
    accepted = json_of(answer)
    op = finished(db, accepted["operation_id"])
    download = raw(base, "GET", accepted["download_url"], user["token"])
    part = raw(base, "GET", accepted["download_url"] + ".part", user["token"])

    cause = "No space left on device" if kind == "full" else "Read-only file system"
    assert op["status"] == "failed", op
    assert cause in op["error"] and "Gave up" not in op["error"], op["error"]
    assert op["attempts"] == 1, op  # failed in its run, not retried until it gave up
    outcomes = item_outcomes(db, accepted["operation_id"])
    assert outcomes.get("failed", 0) > 0 and "pending" not in outcomes, outcomes
    assert download["status"] in (404, 409, 410), download
    assert "detail" in json_of(download)
    assert part["status"] == 404, part  # no half-written file, by any name
    assert sorted(os.listdir(target)) == [], "the .part file was left behind"
    print(
        f"\n[export {kind}] failed in attempt 1 after {outcomes.get('succeeded', 0)} "
        f"sessions: {op['error'][:120]!r}; download {download['status']}"
    )
