"""HTTP through project.asgi (as daphne serves it): the middleware chain and the view run
on the request's thread in one hop from the event loop (project.handlers), with every
middleware still applied."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from asgiref import sync
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator
from django.test import Client
from rest_framework.authtoken.models import Token

from bulkops.models import BulkOperation, Session
from project.asgi import application
from project.handlers import SyncChainASGIHandler

pytestmark = pytest.mark.django_db(transaction=True)
CLOSE = "/api/bulk/sessions/close"


def get(path: str) -> HttpCommunicator:
    return HttpCommunicator(application, "GET", path, headers=[(b"host", b"testserver")])


@pytest.fixture
def request_threads(monkeypatch) -> list[int]:
    """The thread each request's middleware chain and view ran on, in order."""
    seen: list[int] = []
    original = SyncChainASGIHandler.get_response

    def recorded(self, request):
        seen.append(threading.get_ident())
        return original(self, request)

    monkeypatch.setattr(SyncChainASGIHandler, "get_response", recorded)
    return seen


def post(body: dict, headers: list[tuple[bytes, bytes]]) -> HttpCommunicator:
    return HttpCommunicator(
        application,
        "POST",
        CLOSE,
        body=json.dumps(body).encode(),
        headers=[(b"host", b"testserver"), (b"content-type", b"application/json"), *headers],
    )


@pytest.fixture
def hops(monkeypatch) -> list[str]:
    """What each request's ``sync_to_async`` hands to a thread, in order."""
    seen: list[str] = []
    original = sync.SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        seen.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", counted)
    return seen


async def test_a_post_runs_its_middleware_and_view_in_one_hop(owner, make_session, hops, settings):
    settings.BULKOPS_INLINE_MAX_SESSIONS = 20  # run in the request, as by default
    sid = (await database_sync_to_async(make_session)(owner)).pk
    key = (await database_sync_to_async(Token.objects.create)(user=owner)).key
    hops.clear()

    auth = [(b"authorization", f"Token {key}".encode())]
    response = await post({"session_ids": [sid]}, auth).get_response()
    # Besides the request signals and the response's close: the chain, once.
    chain = [name for name in hops if "send" not in name and "close" not in name]

    assert response["status"] == 202, response["body"]
    headers = dict(response["headers"])
    # The outer (SecurityMiddleware, CSP) and inner (XFrameOptions) middleware ran.
    assert headers[b"X-Frame-Options"] == b"DENY"
    assert b"Content-Security-Policy" in headers
    operation = await database_sync_to_async(BulkOperation.objects.get)()
    assert json.loads(response["body"])["operation_id"] == operation.pk
    assert operation.status == "completed"
    assert (await database_sync_to_async(Session.objects.get)(pk=sid)).status == "closed"
    assert chain == ["BaseHandler.get_response"]


async def test_a_cookie_post_without_its_csrf_token_is_refused_and_changes_nothing(
    owner, make_session
):
    sid = (await database_sync_to_async(make_session)(owner)).pk

    def login() -> str:
        client = Client()
        client.force_login(owner)
        return client.cookies["sessionid"].value

    cookie = await database_sync_to_async(login)()
    response = await post(
        {"session_ids": [sid]}, [(b"cookie", f"sessionid={cookie}".encode())]
    ).get_response()

    assert response["status"] == 403
    assert b"CSRF" in response["body"]
    assert not await database_sync_to_async(BulkOperation.objects.exists)()
    assert (await database_sync_to_async(Session.objects.get)(pk=sid)).status == "active"


async def test_requests_one_after_another_run_on_one_kept_thread(request_threads):
    for _ in range(3):
        response = await get("/healthz").get_response()
        assert response["status"] == 200, response["body"]

    assert len(request_threads) == 3
    assert len(set(request_threads)) == 1
    assert threading.get_ident() not in request_threads  # never the event loop's


async def test_requests_at_the_same_time_each_run_on_a_thread_of_their_own(
    request_threads, monkeypatch
):
    # Each request's chain waits for the other's: on one shared thread they never meet.
    both_in = threading.Barrier(2, timeout=10)
    original = SyncChainASGIHandler.get_response

    def meeting(self, request):
        both_in.wait()
        return original(self, request)

    monkeypatch.setattr(SyncChainASGIHandler, "get_response", meeting)
    responses = await asyncio.gather(
        get("/healthz").get_response(timeout=15), get("/healthz").get_response(timeout=15)
    )

    assert [r["status"] for r in responses] == [200, 200]
    assert not both_in.broken
    assert len(set(request_threads)) == 2


async def test_a_request_whose_client_went_away_mid_view_does_not_hold_up_the_next(
    request_threads, monkeypatch
):
    # The first request's view blocks until released; its client disconnects meanwhile.
    started, release = threading.Event(), threading.Event()
    held: list[int] = []
    original = SyncChainASGIHandler.get_response

    def blocking_once(self, request):
        if not started.is_set():
            held.append(threading.get_ident())
            started.set()
            release.wait(20)
        return original(self, request)

    monkeypatch.setattr(SyncChainASGIHandler, "get_response", blocking_once)
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/healthz",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
    }
    gone = ApplicationCommunicator(application, scope)
    try:
        await gone.send_input({"type": "http.request", "body": b"", "more_body": False})
        assert await asyncio.to_thread(started.wait, 10)
        await gone.send_input({"type": "http.disconnect"})
        await gone.wait(timeout=10)  # Django stopped waiting; the view still runs

        response = await get("/healthz").get_response(timeout=10)

        assert response["status"] == 200
        assert not release.is_set()  # answered while the first view was still held
        assert len(request_threads) == 1  # the second request's; the first is held
        assert request_threads[0] not in held
    finally:
        release.set()
