"""Shared fixtures and helpers of the API tests (no tests here).

Imported by the API tests (tests/api/conftest.py hands them the fixtures).
"""

from __future__ import annotations

import json

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from bulkops.models import BulkOperation, Session

ACTION_PATHS = {
    "delete": "/api/bulk/sessions/delete",
    "close": "/api/bulk/sessions/close",
    "archive": "/api/bulk/sessions/archive",
    "restore": "/api/bulk/sessions/restore",
    "export": "/api/bulk/sessions/export-metadata",
}
VALIDATE = "/api/bulk/sessions/validate"


def token_client(user) -> APIClient:
    """An APIClient that authenticates with ``Authorization: Token …`` (as a script would)."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    """Users are made per test; the default PBKDF2 would dominate the suite's time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api(owner) -> APIClient:
    return token_client(owner)


def post_json(client: APIClient, path: str, body, **extra):
    return client.post(path, data=json.dumps(body), content_type="application/json", **extra)


def snapshot() -> list[tuple]:
    """Every session column an action could change, to assert "nothing changed"."""
    return list(
        Session.objects.order_by("pk").values_list(
            "pk",
            "owner_id",
            "status",
            "title",
            "content",
            "deleted_at",
            "closed_at",
            "archived_at",
            "updated_at",
        )
    )


def assert_nothing_happened(before: list[tuple], operations: int = 0) -> None:
    assert snapshot() == before
    assert BulkOperation.objects.count() == operations
