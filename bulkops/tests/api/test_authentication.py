"""Token authentication (``api.authentication``): DRF's answers and errors, one query
a request — its SQL written once (PostgreSQL) — and a revoked token or deactivated
user refused on the very next request, however the change was made."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from bulkops.api import authentication
from bulkops.tests.support.api import token_client

pytestmark = pytest.mark.django_db
INFO = "/api/bulk/sessions/info"
#: DRF answers a failed authentication 403 when the first class (SessionAuthentication)
#: names no ``WWW-Authenticate`` scheme.
REFUSED = 403


def _auth_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if "authtoken_token" in q["sql"]]


def test_a_token_authenticates_its_user_in_one_query(owner):
    client = token_client(owner)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(INFO).status_code == 200
    assert len(_auth_queries(queries.captured_queries)) == 1


@pytest.mark.postgres
def test_the_lookup_is_the_precompiled_statement_and_makes_the_rows_the_orm_makes(owner):
    key = Token.objects.create(user=owner).key
    with CaptureQueriesContext(connection) as queries:
        user, token = authentication.PrecompiledTokenAuthentication().authenticate_credentials(key)
    assert [q["sql"] for q in queries.captured_queries] == [
        authentication._statement(connection.alias)[0].replace("%s", f"'{key}'")
    ]
    expected = Token.objects.select_related("user").get(key=key)
    fields = [f.attname for f in get_user_model()._meta.concrete_fields]
    assert [getattr(user, f) for f in fields] == [getattr(expected.user, f) for f in fields]
    assert (token.key, token.user_id, token.created) == (key, owner.pk, expected.created)
    assert token.user is user and not user._state.adding and user._state.db == "default"


def test_a_deleted_token_is_refused_on_the_next_request(owner):
    client = token_client(owner)
    assert client.get(INFO).status_code == 200
    Token.objects.filter(user=owner).delete()
    response = client.get(INFO)
    assert response.status_code == REFUSED
    assert "Invalid token." in response.content.decode()


def test_a_user_deactivated_without_signals_is_refused_on_the_next_request(owner):
    client = token_client(owner)
    assert client.get(INFO).status_code == 200
    get_user_model().objects.filter(pk=owner.pk).update(is_active=False)
    response = client.get(INFO)
    assert response.status_code == REFUSED
    assert "User inactive or deleted." in response.content.decode()


def test_a_bad_header_gets_drfs_answer(owner):
    client = token_client(owner)
    client.credentials(HTTP_AUTHORIZATION="Token two words")
    response = client.get(INFO)
    assert response.status_code == REFUSED
    assert "should not contain spaces" in response.content.decode()
