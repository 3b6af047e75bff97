"""HTTP through project.asgi (as daphne serves it): the middleware chain and the view run
on the request's thread in one hop from the event loop (project.handlers), with every
middleware still applied."""

from __future__ import annotations

import json

import pytest
from asgiref import sync
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator
from django.test import Client
from rest_framework.authtoken.models import Token

from bulkops.models import BulkOperation, Session
from project.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)
CLOSE = "/api/bulk/sessions/close"


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
