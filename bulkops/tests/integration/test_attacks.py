"""Tried as an attacker would, against real daphne servers (issue 13): limits that hold
under a burst, and no input that gets a 500."""

from __future__ import annotations

import http.client
import json
import threading
from urllib.parse import urlparse

import pytest

from bulkops.tests.support.processes import seed, using_postgres, using_redis

pytestmark = pytest.mark.processes


def request(base: str, method: str, path: str, token: str, body: bytes | None = None,
            headers: dict | None = None, chunked: bool = False) -> tuple[int, str, bytes]:  # fmt: skip
    """(status, content type, body) of one request over a fresh connection."""
    parsed = urlparse(base)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        all_headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        all_headers |= headers or {}
        if chunked:
            conn.request(method, path, body=iter([body or b""]), headers=all_headers,
                         encode_chunked=True)  # fmt: skip
        else:
            conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def burst(bases: list[str], token: str, path: str, bodies: list[dict]) -> list[int]:
    """Send every body at once (a barrier releases all threads together), spread over
    the servers; return the statuses."""
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = [0] * len(bodies)

    def send(i: int) -> None:
        payload = json.dumps(bodies[i]).encode()
        barrier.wait()
        statuses[i] = request(bases[i % len(bases)], "POST", path, token, payload)[0]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


@pytest.fixture
def target(world):
    """One server (two sharing Redis when it is there), no worker: operations stay
    pending, so the active-operations cap is reached for real."""
    redis = using_redis()
    db, procs = world(
        postgres=using_postgres(),
        redis=redis,
        BULKOPS_RATE_LIMIT_DELETE="10/m",
        BULKOPS_RATE_LIMIT_RESTORE="1000/m",
        BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER="5",
    )
    alice = seed(procs, sessions=40)
    bases = [procs.server("web-1"), *([procs.server("web-2")] if redis else [])]
    return db, procs, bases, alice["token"]


def test_a_burst_of_30_deletes_starts_exactly_the_rate_limit(world):
    # Ten a day, not a minute: django-ratelimit's windows are fixed, and a burst that
    # straddles a window's end rightly gets ten more — at 10/m a burst of a few seconds
    # on a loaded machine did so about one run in twelve (seen in CI: 11+ accepted).
    db, procs = world(
        postgres=using_postgres(),
        redis=using_redis(),
        BULKOPS_RATE_LIMIT_DELETE="10/d",
        BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER="100",
    )
    token = seed(procs, sessions=40)["token"]
    bases = [procs.server("web-1"), *([procs.server("web-2")] if using_redis() else [])]
    statuses = burst(
        bases,
        token,
        "/api/bulk/sessions/delete",
        [{"session_ids": [f"s-{i:05d}"]} for i in range(30)],
    )
    assert sorted(statuses) == [202] * 10 + [429] * 20, statuses
    assert db.scalar("SELECT COUNT(*) FROM bulkops_bulkoperation") == 10


def test_a_burst_of_20_restores_never_exceeds_the_active_cap(target):
    db, _, bases, token = target
    statuses = burst(
        bases,
        token,
        "/api/bulk/sessions/restore",
        [{"session_ids": [f"s-{i:05d}"]} for i in range(20)],
    )
    assert sorted(statuses) == [202] * 5 + [429] * 15, statuses
    active = db.scalar(
        "SELECT COUNT(*) FROM bulkops_bulkoperation WHERE status IN ('pending', 'running')"
    )
    assert active == 5


NUL_URLS = [
    "/api/bulk/operations/%00/status",
    "/api/bulk/operations/%00/",
    "/api/bulk/operations/%00/items",
    "/api/bulk/operations/op-%00/status",
    "/api/sessions/a%00b",
    "/api/sessions/a%00b/",
    "/api/sessions/?status=%00",
    "/api/sessions/?search=%00",
    "/api/sessions/?owner=%00",
    "/api/sessions/?ordering=%00",
    "/api/bulk/operations/?page=%00",
    "/api/download/%00.csv",
    "/admin/bulkops/session/%00/change/",
    "/admin/bulkops/bulkoperation/%00/progress/",
    "/admin/bulkops/bulkoperation/%00/status/",
    "/admin/bulkops/session/?status__exact=%00",
    "/admin/bulkops/session/?q=%00",
]


def test_nul_in_any_url_is_a_4xx_never_a_500(target):
    _, _, bases, token = target
    for path in NUL_URLS:
        status, ctype, body = request(bases[0], "GET", path, token)
        assert 400 <= status < 500, (path, status, body[:300])
        assert ctype.startswith("application/json"), (path, ctype)


def test_json_nested_10000_deep_is_a_400(target):
    _, _, bases, token = target
    deep = b"[" * 10_000 + b"]" * 10_000
    for path in ("/api/bulk/sessions/validate", "/api/bulk/sessions/close"):
        status, ctype, body = request(bases[0], "POST", path, token, deep)
        assert status == 400, (path, status, body[:300])
        assert ctype.startswith("application/json")
        assert "nested too deeply" in json.loads(body)["detail"]


def test_a_chunked_body_is_read_like_one_with_a_length(target):
    db, _, bases, token = target
    body = json.dumps({"session_ids": ["s-00001", "s-00002"]}).encode()
    status, _, answer = request(bases[0], "POST", "/api/bulk/sessions/close", token, body,
                                chunked=True)  # fmt: skip
    assert status == 202, answer
    operation_id = json.loads(answer)["operation_id"]
    assert db.operation(operation_id)["total"] == 2
    too_big = b'{"session_ids": ["' + b"x" * (1024 * 1024) + b'"]}'
    status, ctype, _ = request(bases[0], "POST", "/api/bulk/sessions/close", token, too_big,
                               chunked=True)  # fmt: skip
    assert (status, ctype) == (413, "application/json")


# --- round 3: oversized numbers and empty enums (DEBUG off, as deployed) -------------------
ROOT_SETUP = """
import json
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token
from bulkops.models import Session
root = get_user_model().objects.create_superuser("root", password="pw-integration-1")
Session.objects.bulk_create(Session(id=f"r-{i:03d}", owner=root, title=f"R {i}") for i in range(60))
client = Client()
client.force_login(root)
cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
print(json.dumps({"token": Token.objects.create(user=root).key, "cookie": cookie}))
"""
HUGE = "9" * 4400  # past Python's 4,300-digit limit for int("…")
DEEP = str(10**18)  # a page whose OFFSET is past PostgreSQL's bigint


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """One daphne with DEBUG off; alice (token, 40 sessions, a close operation of two)
    and root, a superuser who sees everyone's sessions (token, admin cookie, 60 sessions
    and a close operation of their own)."""
    from bulkops.tests.support.processes import worlds

    teardown = worlds(tmp_path_factory.mktemp("deployed"))
    make = next(teardown)
    try:
        static = tmp_path_factory.mktemp("static")
        _, procs = make(postgres=using_postgres(), redis=using_redis(), DEBUG="0",
                        SECURE_SSL_REDIRECT="0", SECRET_KEY="test-attacks-" + "k" * 40,
                        STATIC_ROOT=str(static))  # fmt: skip
        alice = seed(procs, sessions=40)["token"]
        root = json.loads(procs.run("shell", "-c", ROOT_SETUP).strip().splitlines()[-1])
        procs.run("collectstatic", "--no-input", "-v", "0")
        base = procs.server("daphne")
        ops = {}
        for name, token, ids in (("alice", alice, ["s-00001", "s-00002"]),
                                 ("root", root["token"], ["r-001", "r-002"])):  # fmt: skip
            body = json.dumps({"session_ids": ids}).encode()
            status, _, answer = request(base, "POST", "/api/bulk/sessions/close", token, body)
            assert status == 202, answer
            ops[name] = json.loads(answer)["operation_id"]
        yield {"base": base, "alice": alice, "root": root, "ops": ops,
               "log": procs.tmp_path / "daphne.log"}  # fmt: skip
    finally:
        next(teardown, None)


@pytest.fixture
def deployed(deployment):
    """The module's deployment; after the test, its server log since the test began
    holds no traceback (no 500 was answered)."""
    start = len(deployment["log"].read_text())
    yield deployment
    log = deployment["log"].read_text()[start:]
    assert "Traceback" not in log, log[-3000:]


def get(deployed, path: str, *, who: str = "alice", admin: bool = False):
    """(status, content type, body) of a GET as alice or root (admin: root's cookie)."""
    token = deployed[who] if who == "alice" else deployed["root"]["token"]
    headers = {"Cookie": f"sessionid={deployed['root']['cookie']}"} if admin else None
    return request(deployed["base"], "GET", path, token, headers=headers)


def test_a_page_size_of_4400_digits_is_a_400_on_every_paginated_list(deployed):
    for who in ("alice", "root"):
        op = deployed["ops"][who]
        for path in ("/api/sessions/", "/api/bulk/operations/",
                     f"/api/bulk/operations/{op}/items", f"/api/bulk/operations/{op}/"):  # fmt: skip
            status, ctype, body = get(deployed, f"{path}?page_size={HUGE}", who=who)
            assert status == 400, (who, path, status, body[:300])
            assert ctype.startswith("application/json")
            assert "page_size" in json.loads(body), body[:300]
            status, _, body = get(deployed, f"{path}?page={HUGE}", who=who)
            assert status == 404, (who, path, status, body[:300])


@pytest.mark.parametrize("page", [DEEP, str(2**63), str(2**63 // 50 + 1), HUGE])
def test_a_very_deep_page_of_everyones_sessions_is_a_404(deployed, page):
    for who in ("root", "alice"):
        status, _, body = get(deployed, f"/api/sessions/?page={page}", who=who)
        assert status == 404, (who, status, body[:300])
        assert json.loads(body) == {"detail": "Invalid page."}


@pytest.mark.parametrize("page", [DEEP, str(2**63), HUGE, "-1"])
def test_a_very_deep_admin_changelist_page_is_djangos_out_of_range_answer(deployed, page):
    """Django's changelist answers a page past the end with a redirect to ``?e=1``."""
    for model in ("session", "bulkoperation"):
        status, _, body = get(deployed, f"/admin/bulkops/{model}/?p={page}", who="root",
                              admin=True)  # fmt: skip
        assert status in (200, 302), (model, page, status, body[:300])


@pytest.mark.parametrize(
    "query",
    ["format=&outcome=", "format=", "outcome=", "format=xml", "outcome=nope", "format=CSV"],
)
def test_an_empty_or_unknown_report_format_or_outcome_is_a_400(deployed, query):
    op = deployed["ops"]["alice"]
    status, ctype, body = get(deployed, f"/api/bulk/operations/{op}/report?{query}")
    assert status == 400, (query, status, body[:300])
    assert ctype.startswith("application/json")
    assert set(json.loads(body)) <= {"format", "outcome"}
    if "outcome" in query:
        status, _, body = get(deployed, f"/api/bulk/operations/{op}/items?{query}")
        assert status == 400, (query, status, body[:300])


@pytest.mark.parametrize("query", ["format=xml", "format=", "outcome=", "outcome=nope"])
def test_the_admin_report_refuses_what_the_api_refuses(deployed, query):
    op = deployed["ops"]["root"]
    path = f"/admin/bulkops/bulkoperation/{op}/report/?{query}"
    status, ctype, body = get(deployed, path, who="root", admin=True)
    assert status == 400, (query, status, body[:300])
    assert ctype.startswith("text/plain")
    assert ("csv or json" in body.decode()) == query.startswith("format"), body
    for good in ("format=csv", "format=json&outcome=pending", ""):
        status, _, _ = get(deployed, f"/admin/bulkops/bulkoperation/{op}/report/?{good}",
                           who="root", admin=True)  # fmt: skip
        assert status == 200, good


def admin_get(deployed, path: str, cookie: str = "") -> http.client.HTTPResponse:
    """root's GET of an admin page (its body read into ``.text``), redirects not followed."""
    parsed = urlparse(deployed["base"])
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        cookies = f"sessionid={deployed['root']['cookie']}; {cookie}"
        conn.request("GET", path, headers={"Cookie": cookies})
        response = conn.getresponse()
        response.text = response.read().decode()
        return response
    finally:
        conn.close()


@pytest.mark.parametrize("parameter", ["owner__id__exact", "owner"])
def test_an_admin_owner_filter_of_4400_digits_lists_nothing_and_says_why(deployed, parameter):
    changelist, row = "/admin/bulkops/session/", 'name="_selected_action" value="'
    assert f"{row}r-0" in admin_get(deployed, changelist).text  # root sees every row
    response = admin_get(deployed, f"{changelist}?{parameter}={HUGE}")
    assert response.status == 200, response.text[-3000:]
    assert "The owner filter takes a user id or a username" in response.text
    assert row not in response.text  # never widened to everyone's rows


@pytest.mark.parametrize("model", ["session", "bulkoperation"])
def test_an_admin_date_hierarchy_past_year_9998_is_a_message_not_a_500(deployed, model):
    changelist = f"/admin/bulkops/{model}/"
    response = admin_get(deployed, f"{changelist}?created_at__year=9999&created_at__month=12")
    assert response.status == 302, response.text[-3000:]
    assert response.getheader("Location") == f"{changelist}?e=1"
    messages = next(c.split(";")[0] for c in response.headers.get_all("Set-Cookie")
                    if c.startswith("messages="))  # fmt: skip
    shown = admin_get(deployed, f"{changelist}?e=1", cookie=messages)
    assert shown.status == 200
    assert "The date in the address is not a period that can be listed" in shown.text
