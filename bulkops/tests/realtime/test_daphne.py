"""The WebSocket endpoint as deployed (issue 13): a real daphne process serving
project.asgi with DEBUG off, a real ``websockets`` client, the run's database (SQLite, or
PostgreSQL with DATABASE_URL) and Redis when REDIS_URL is set.

Each test plays an attack, then asserts what the client receives and what the server
log holds (never a traceback, never a 1011 or a 500).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bulkops.tests.support.processes import WAIT, seed, using_postgres, using_redis, worlds

pytestmark = pytest.mark.processes

TRUSTED = "https://app.example.com"
PRODUCTION = {"DEBUG": "0", "SECRET_KEY": "test-daphne-" + "k" * 40}
COOKIE = """
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
client = Client()
client.force_login(get_user_model().objects.get(username="alice"))
print(client.cookies[settings.SESSION_COOKIE_NAME].value)
"""


@dataclass
class Daphne:
    base: str
    port: int
    token: str
    cookie: str
    log_path: Path
    log_start: int = 0

    @property
    def log(self) -> str:
        """What the server logged since this test began."""
        return self.log_path.read_text()[self.log_start :]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Daphne]:
    """One daphne for the module (DEBUG off, CSRF_TRUSTED_ORIGINS = TRUSTED) and alice,
    with a token and a session cookie."""
    teardown = worlds(tmp_path_factory.mktemp("daphne"))
    make = next(teardown)
    try:
        root = tmp_path_factory.mktemp("static")
        _, procs = make(
            postgres=using_postgres(),
            redis=using_redis(),
            CSRF_TRUSTED_ORIGINS=TRUSTED,
            STATIC_ROOT=str(root),
            **PRODUCTION,
        )
        user = seed(procs, sessions=1)
        procs.run("collectstatic", "--no-input", "-v", "0")  # DEBUG off: asgi requires it
        cookie = procs.run("shell", "-c", COOKIE).strip().splitlines()[-1]
        base = procs.server("daphne")
        yield Daphne(
            base=base,
            port=int(base.rsplit(":", 1)[1]),
            token=user["token"],
            cookie=cookie,
            log_path=procs.tmp_path / "daphne.log",
        )
    finally:
        next(teardown, None)  # kills the server, drops the database


@pytest.fixture
def daphne(server: Daphne) -> Daphne:
    """The module's server, its log read from this test's start."""
    server.log_start = len(server.log_path.read_text())
    return server


def ws_connect(base: str, path: str = "/ws/bulk/", *, origin: str | None = "", **kwargs):
    """A client of ``path``; ``origin`` defaults to the server's own (``None``: no header)."""
    url = base.replace("http", "ws", 1) + path
    return connect(url, origin=base if origin == "" else origin, open_timeout=30, **kwargs)


async def receive(ws: ClientConnection) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def authenticate(ws: ClientConnection, token: str) -> dict:
    """Send the token; return the answer."""
    await ws.send(json.dumps({"type": "auth", "token": token}))
    return await receive(ws)


async def closed_with(ws: ClientConnection) -> int | None:
    """The close code the server sent, once it has closed the connection."""
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), WAIT)
    return ws.close_code


def assert_clean_log(log: str) -> None:
    assert "Traceback" not in log, log
    assert "Exception inside application" not in log, log


# --- 1. messages that used to kill the connection ------------------------------------------
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("[" * 2000 + "]" * 2000, "invalid_json"),
        ('{"type": "subscribe", "operation_id": "\\u0000"}', "not_found"),
        ('{"type": "unsubscribe", "operation_id": "op-\\u0000"}', "not_found"),
        ('{"type": "subscribe", "operation_id": "op-' + "0" * 31 + '\\u0000"}', "not_found"),
    ],
    ids=["nested-2000-deep", "nul-operation-id", "nul-unsubscribe", "nul-in-a-well-shaped-id"],
)
async def test_hostile_message_gets_an_error_and_the_connection_stays_usable(daphne, frame, code):
    async with ws_connect(daphne.base) as ws:
        assert (await authenticate(ws, daphne.token))["type"] == "authenticated"
        await ws.send(frame)
        error = await receive(ws)
        assert (error["type"], error["code"]) == ("error", code)
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws) == {"type": "pong"}
    assert_clean_log(daphne.log)


@pytest.mark.parametrize("token", ["\u0000abc", "\u0000" * 40, "g" * 40, "A" * 41, ""])
async def test_malformed_token_is_refused_4401_without_a_traceback(daphne, token):
    async with ws_connect(daphne.base) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws) == {"type": "pong"}
        await ws.send(json.dumps({"type": "auth", "token": token}))
        error = await receive(ws)
        assert (error["type"], error["code"]) == (
            "error",
            "authentication_failed" if token else "missing_field",
        )
        if token:
            assert await closed_with(ws) == 4401
    assert_clean_log(daphne.log)


# --- 2. unknown paths ---------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/ws/bulk", "/ws/nope", "/ws/bulk/1/extra/", "/", "/ws/bulk//"])
async def test_unknown_path_is_closed_4404_for_anonymous_and_authenticated_clients(daphne, path):
    async with ws_connect(daphne.base, path) as ws:
        error = await receive(ws)
        assert (error["type"], error["code"]) == ("error", "not_found")
        assert await closed_with(ws) == 4404
    headers = {"Cookie": f"sessionid={daphne.cookie}"}
    async with ws_connect(daphne.base, path, additional_headers=headers) as ws:
        assert (await receive(ws))["code"] == "not_found"
        assert await closed_with(ws) == 4404
    assert_clean_log(daphne.log)


# --- 3. connections per user, counted across servers -----------------------------------------
async def test_the_connection_cap_holds_across_two_servers_sharing_redis(world, tmp_path):
    _, procs = world(
        postgres=using_postgres(),
        redis=True,
        BULKOPS_MAX_WS_CONNECTIONS_PER_USER="2",
        STATIC_ROOT=str(tmp_path / "static"),
        **PRODUCTION,
    )
    token = (await asyncio.to_thread(seed, procs, sessions=0))["token"]
    await asyncio.to_thread(procs.run, "collectstatic", "--no-input", "-v", "0")
    one = await asyncio.to_thread(procs.server, "one")
    two = await asyncio.to_thread(procs.server, "two")
    async with ws_connect(one) as a, ws_connect(two) as b:
        assert (await authenticate(a, token))["type"] == "authenticated"
        assert (await authenticate(b, token))["type"] == "authenticated"
        for base in (one, two):
            async with ws_connect(base) as refused:
                error = await authenticate(refused, token)
                assert (error["type"], error["code"]) == ("error", "too_many_connections")
                assert await closed_with(refused) == 4429
    # Both closed: their slots are free again (once each server has seen its disconnect).
    deadline = time.monotonic() + WAIT
    while True:
        async with ws_connect(two) as c, ws_connect(one) as d:
            answers = [await authenticate(c, token), await authenticate(d, token)]
        if [m["type"] for m in answers] == ["authenticated"] * 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert [m["type"] for m in answers] == ["authenticated"] * 2
    for name in ("one", "two"):
        assert_clean_log((procs.tmp_path / f"{name}.log").read_text())


# --- 4. the Origin check: scheme, host and port --------------------------------------------
def refused_origins(port: int) -> list[str | None]:
    return [
        f"https://127.0.0.1:{port}",  # other scheme
        "http://127.0.0.1:9999",  # other port
        "https://127.0.0.1:9999",  # both (the example)
        "http://127.0.0.1",  # the default port is not this server's
        f"http://evil.example:{port}",  # host not in ALLOWED_HOSTS
        f"http://127.0.0.1.evil.example:{port}",
        "http://app.example.com",  # a trusted origin on another scheme
        "https://app.example.com:8443",  # … or another port
        "null",
        None,  # no Origin at all
    ]


def accepted_origins(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}",
        f"http://localhost:{port}",
        f"HTTP://LOCALHOST:{port}",
        TRUSTED,
        TRUSTED + ":443",
    ]


async def test_only_same_or_trusted_origins_are_accepted_with_a_session_cookie(daphne):
    headers = {"Cookie": f"sessionid={daphne.cookie}"}
    for origin in refused_origins(daphne.port):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(daphne.base, origin=origin, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 403, origin
    for origin in accepted_origins(daphne.port):
        async with ws_connect(daphne.base, origin=origin, additional_headers=headers) as ws:
            assert (await receive(ws))["type"] == "authenticated", origin
    assert_clean_log(daphne.log)


async def test_behind_a_tls_proxy_the_https_origin_is_the_same_origin(daphne):
    """DEBUG off trusts ``X-Forwarded-Proto: https`` (SECURE_PROXY_SSL_HEADER) like Django."""
    headers = {"Cookie": f"sessionid={daphne.cookie}", "X-Forwarded-Proto": "https"}
    origin = f"https://127.0.0.1:{daphne.port}"
    async with ws_connect(daphne.base, origin=origin, additional_headers=headers) as ws:
        assert (await receive(ws))["type"] == "authenticated"
    with pytest.raises(InvalidStatus):
        async with ws_connect(daphne.base, origin=daphne.base, additional_headers=headers):
            pass
    assert_clean_log(daphne.log)


# --- 5. access revoked while connected, across two servers sharing Redis ------------------------
REVOKE_TOKEN = """
from rest_framework.authtoken.models import Token
Token.objects.filter(user__username="alice").delete()
"""
DEACTIVATE = """
from django.contrib.auth import get_user_model
alice = get_user_model().objects.get(username="alice")
alice.is_active = False
alice.save()
"""
DEACTIVATE_QUIETLY = """
from django.contrib.auth import get_user_model
get_user_model().objects.filter(username="alice").update(is_active=False)  # no signal
"""


async def two_servers(world, tmp_path, recheck_seconds: str):
    """Two daphne servers sharing Redis, alice's token and session cookie."""
    _, procs = world(
        postgres=using_postgres(),
        redis=True,
        BULKOPS_WS_RECHECK_SECONDS=recheck_seconds,
        STATIC_ROOT=str(tmp_path / "static"),
        **PRODUCTION,
    )
    token = (await asyncio.to_thread(seed, procs, sessions=0))["token"]
    await asyncio.to_thread(procs.run, "collectstatic", "--no-input", "-v", "0")
    cookie = (await asyncio.to_thread(procs.run, "shell", "-c", COOKIE)).strip().splitlines()[-1]
    one = await asyncio.to_thread(procs.server, "one")
    two = await asyncio.to_thread(procs.server, "two")
    return procs, one, two, token, cookie


async def assert_revoked(ws: ClientConnection) -> None:
    error = await receive(ws)
    assert (error["type"], error["code"]) == ("error", "access_revoked"), error
    assert await closed_with(ws) == 4401


async def test_revoking_access_closes_the_users_sockets_on_every_server(world, tmp_path):
    """Signals, through Redis: the token deleted (in another process) closes the token's
    sockets on both servers and not the session cookie's; then deactivating alice
    closes that one too. The re-check is an hour away: only the signal can do it."""
    procs, one, two, token, cookie = await two_servers(world, tmp_path, "3600")
    headers = {"Cookie": f"sessionid={cookie}"}
    async with (
        ws_connect(one) as a,
        ws_connect(two) as b,
        ws_connect(one, additional_headers=headers) as c,
    ):
        assert (await authenticate(a, token))["type"] == "authenticated"
        assert (await authenticate(b, token))["type"] == "authenticated"
        assert (await receive(c))["type"] == "authenticated"
        await asyncio.to_thread(procs.run, "shell", "-c", REVOKE_TOKEN)
        await assert_revoked(a)
        await assert_revoked(b)
        await c.send(json.dumps({"type": "ping"}))
        assert await receive(c) == {"type": "pong"}
        await asyncio.to_thread(procs.run, "shell", "-c", DEACTIVATE)
        await assert_revoked(c)
    async with ws_connect(two) as refused:
        assert (await authenticate(refused, token))["code"] == "authentication_failed"
    for name in ("one", "two"):
        assert_clean_log((procs.tmp_path / f"{name}.log").read_text())


async def test_the_recheck_closes_sockets_no_signal_announced(world, tmp_path):
    procs, one, two, token, _ = await two_servers(world, tmp_path, "1")
    async with ws_connect(one) as a, ws_connect(two) as b:
        assert (await authenticate(a, token))["type"] == "authenticated"
        assert (await authenticate(b, token))["type"] == "authenticated"
        await asyncio.to_thread(procs.run, "shell", "-c", DEACTIVATE_QUIETLY)
        await assert_revoked(a)
        await assert_revoked(b)
    for name in ("one", "two"):
        assert_clean_log((procs.tmp_path / f"{name}.log").read_text())
