"""The WebSocket Origin check (bulkops.realtime.origin): scheme, host and port, through
project.asgi's stack (a refused handshake never reaches the consumer)."""

from __future__ import annotations

import pytest

from bulkops.realtime.origin import parse_origin
from bulkops.tests.support.websocket import Communicator
from project.asgi import application


def handshake(origin: str | list[str] | None, *, host: str = "testserver", **scope_extra):
    origins = [origin] if isinstance(origin, str) else origin or []
    headers = [(b"host", host.encode()), *((b"origin", o.encode()) for o in origins)]
    extra = scope_extra.pop("headers", [])
    comm = Communicator(application, "/ws/bulk/", headers=[*headers, *extra])
    comm.scope.update(scope_extra)
    return comm


async def accepted(comm: Communicator) -> bool:
    ok, _ = await comm.connect()
    if ok:
        await comm.disconnect()
    return ok


@pytest.fixture(autouse=True)
def _site(settings, db):
    settings.ALLOWED_HOSTS = ["testserver", ".example.org"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.trusted.example"]
    settings.SECURE_PROXY_SSL_HEADER = None


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("http://testserver", ("http", "testserver", 80)),
        ("HTTPS://TestServer", ("https", "testserver", 443)),
        ("https://testserver:443", ("https", "testserver", 443)),
        ("http://127.0.0.1:8000", ("http", "127.0.0.1", 8000)),
        ("http://[::1]:8000", ("http", "[::1]", 8000)),
        ("null", None),
        ("ftp://testserver", None),
        ("http://testserver/", None),
        ("http://user@testserver", None),
        ("http://testserver:port", None),
        ("http://", None),
        ("http://testserver\n", None),
    ],
)
def test_parse_origin(value, parsed):
    assert parse_origin(value) == parsed


@pytest.mark.parametrize(
    "origin",
    [
        "http://testserver",
        "http://testserver:80",
        "http://www.example.org",  # a host of ALLOWED_HOSTS (".example.org")
        "https://app.example.com",  # CSRF_TRUSTED_ORIGINS, exactly
        "https://app.example.com:443",
        "https://trusted.example",  # "https://*.trusted.example": the domain …
        "https://a.b.trusted.example",  # … and its subdomains
    ],
)
async def test_allowed_origins_reach_the_consumer(origin):
    assert await accepted(handshake(origin))


@pytest.mark.parametrize(
    "origin",
    [
        "https://testserver",  # another scheme than the request's (ws → http)
        "http://testserver:8000",  # another port than the Host's
        "http://evil.example",
        "http://testserver.evil.example",
        "http://app.example.com",  # a trusted origin on another scheme …
        "https://app.example.com:8443",  # … or another port
        "https://other.example.com",
        "https://trusted.example:8443",
        "https://nottrusted.example",
        "null",
        ["http://testserver", "http://evil.example"],  # two Origin headers
        None,
    ],
)
async def test_other_origins_are_refused_at_the_handshake(origin):
    assert not await accepted(handshake(origin))


async def test_the_port_is_the_host_headers():
    assert await accepted(handshake("http://testserver:8000", host="testserver:8000"))
    assert not await accepted(handshake("http://testserver", host="testserver:8000"))


async def test_wss_expects_an_https_origin():
    assert await accepted(handshake("https://testserver", scheme="wss"))
    assert not await accepted(handshake("http://testserver", scheme="wss"))


async def test_the_proxys_header_decides_when_configured(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = [(b"x-forwarded-proto", b"https")]
    assert await accepted(handshake("https://testserver", headers=proxied))
    assert not await accepted(handshake("http://testserver", headers=proxied))
    # Without the header, the connection's own scheme.
    assert await accepted(handshake("http://testserver"))


async def test_debug_with_no_allowed_hosts_allows_localhost_like_django(settings):
    settings.ALLOWED_HOSTS = []
    settings.DEBUG = True
    assert await accepted(handshake("http://localhost:8000", host="localhost:8000"))
    assert not await accepted(handshake("http://evil.example:8000", host="localhost:8000"))
