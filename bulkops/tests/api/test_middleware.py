"""Request size limit: a body of exactly BULKOPS_MAX_REQUEST_BYTES is read, one byte more
is refused with a JSON 413 before anything reads it — and changes nothing."""

import json

import pytest

from bulkops.models import BulkOperation, Session
from bulkops.tests.support.api import token_client

pytestmark = pytest.mark.django_db

LIMIT = 4096


def padded(payload: dict, size: int) -> bytes:
    """``payload`` as JSON, padded with insignificant whitespace to exactly ``size`` bytes."""
    body = json.dumps(payload).encode()
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


@pytest.fixture
def limited(settings):
    settings.BULKOPS_MAX_REQUEST_BYTES = LIMIT


def test_body_of_exactly_the_limit_is_accepted(limited, owner, make_session):
    s = make_session(owner)
    body = padded({"session_ids": [s.pk]}, LIMIT)
    response = token_client(owner).generic(
        "POST", "/api/bulk/sessions/close", body, content_type="application/json"
    )
    assert response.status_code == 202, response.content
    assert BulkOperation.objects.filter(user=owner).count() == 1


def test_body_one_byte_over_the_limit_is_413_json_and_changes_nothing(limited, owner, make_session):
    s = make_session(owner)
    body = padded({"session_ids": [s.pk]}, LIMIT + 1)
    response = token_client(owner).generic(
        "POST", "/api/bulk/sessions/close", body, content_type="application/json"
    )
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["max_bytes"] == LIMIT
    assert "limit" in response.json()["detail"]
    assert not BulkOperation.objects.exists()
    assert Session.objects.get(pk=s.pk).status == "active"
