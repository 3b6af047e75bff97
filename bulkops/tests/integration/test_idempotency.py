"""Idempotency under a burst, against real daphne servers (issue 10): ten identical POSTs
with one Idempotency-Key, released together over two servers, start exactly one
operation — every answer is that operation, one says ``Idempotent-Replayed: false`` and
nine ``true`` — and a rate limit of 1 and an active cap of 1 refuse none of them (a
replay is not counted, DESIGN §5)."""

from __future__ import annotations

import http.client
import json
import threading
from urllib.parse import urlparse

import pytest

from bulkops.tests.support.processes import seed, using_postgres, using_redis

pytestmark = pytest.mark.processes
TWINS = 10


def post(base: str, path: str, token: str, body: bytes, key: str) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of one POST over a fresh connection."""
    parsed = urlparse(base)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        headers = {
            "Authorization": f"Token {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        }
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def identical_burst(bases: list[str], token: str, path: str, body: dict, key: str) -> list:
    """TWINS identical requests released at once by a barrier, spread over ``bases``."""
    payload = json.dumps(body).encode()
    barrier = threading.Barrier(TWINS)
    answers: list = [None] * TWINS

    def send(i: int) -> None:
        barrier.wait()
        answers[i] = post(bases[i % len(bases)], path, token, payload, key)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(TWINS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return answers


def test_ten_concurrent_identical_posts_start_exactly_one_operation(world):
    db, procs = world(
        postgres=using_postgres(),
        redis=using_redis(),
        BULKOPS_RATE_LIMIT_CLOSE="1/m",
        BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER="1",
    )
    token = seed(procs, sessions=5)["token"]
    # Two servers: with Redis they share one lock per user; without it only the
    # database's per-user lock orders the twins — the engine's own guarantee.
    bases = [procs.server("web-1"), procs.server("web-2")]
    body = {"session_ids": ["s-00000", "s-00001", "s-00002"], "reason": "one, once"}
    answers = identical_burst(bases, token, "/api/bulk/sessions/close", body, "burst-1")

    assert [status for status, _, _ in answers] == [202] * TWINS, answers
    operation_ids = {data["operation_id"] for _, _, data in answers}
    assert len(operation_ids) == 1, operation_ids
    replayed = sorted(headers.get("Idempotent-Replayed") for _, headers, _ in answers)
    assert replayed == ["false"] + ["true"] * (TWINS - 1)
    rows = db.query("SELECT id, total, idempotency_key FROM bulkops_bulkoperation")
    assert rows == [(operation_ids.pop(), 3, "burst-1")]
    assert db.scalar("SELECT COUNT(*) FROM bulkops_bulkoperationitem") == 3
