"""Every answer of the server carries its reason phrase: daphne writes the status line
through Twisted, whose own table lacks 422 and 429 (RFC 6585 and later), so without
project.asgi's addition a client read ``HTTP/1.1 429 Unknown Status``."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse

import pytest

from bulkops.tests.support.processes import seed

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]


def status_line(base: str, token: str, path: str, body: dict, **headers: str) -> tuple:
    """(status, reason phrase) of a POST, read from the raw status line."""
    url = urlparse(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json",
                     **headers},
        )  # fmt: skip
        response = connection.getresponse()
        response.read()
        return response.status, response.reason
    finally:
        connection.close()


def test_422_and_429_carry_their_reason_phrase(world):
    db, procs = world(postgres=False, redis=False, BULKOPS_RATE_LIMIT_VALIDATE="1/m")
    user = seed(procs, sessions=2)
    base = procs.server("serve", embedded=True)
    token, close = user["token"], "/api/bulk/sessions/close"
    key = {"Idempotency-Key": "phrase-check"}

    assert status_line(base, token, close, {"session_ids": ["s-00000"]}, **key) == (
        202,
        "Accepted",
    )
    assert status_line(base, token, close, {"session_ids": ["s-00001"]}, **key) == (
        422,
        "Unprocessable Entity",
    )
    validate = {"action": "close", "session_ids": ["s-00001"]}
    assert status_line(base, token, "/api/bulk/sessions/validate", validate) == (200, "OK")
    assert status_line(base, token, "/api/bulk/sessions/validate", validate) == (
        429,
        "Too Many Requests",
    )
    # The refused body started nothing: one operation, the first.
    assert db.scalar("SELECT count(*) FROM bulkops_bulkoperation") == 1
