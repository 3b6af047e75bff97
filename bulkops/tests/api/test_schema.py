"""The OpenAPI schema is valid, and the API keeps its promises: an in-process
schemathesis run (every default check, authenticated with a token) finds no failure."""

from __future__ import annotations

import io
import json

import pytest
import schemathesis
from django.core import signals
from django.core.management import call_command
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bulkops.tests.support import api as support
from project.wsgi import application

pytestmark = pytest.mark.django_db
fast_password_hasher = support.fast_password_hasher

#: Refusals that depend on the data, not on the shape of the request: a schema-valid
#: filter can match no session (400) or too many (400, DESIGN §5), and an
#: Idempotency-Key can have been used with another body (422, DESIGN §5).
STATE_DEPENDENT = ("No sessions match the filter", "Narrow the filter", "idempotency_conflict")


def positive_data_acceptance_unless_state_dependent(ctx, response, case):
    """schemathesis' positive_data_acceptance, minus the refusals above."""
    if response.status_code in (400, 422) and any(
        marker in response.text for marker in STATE_DEPENDENT
    ):
        return None
    return positive_data_acceptance(ctx, response, case)


def test_schema_generation_is_clean_and_valid():
    out = io.StringIO()
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out
    )
    schema = json.loads(out.getvalue())
    assert {
        "/api/bulk/sessions/validate",
        "/api/bulk/sessions/delete",
        "/api/bulk/sessions/close",
        "/api/bulk/sessions/archive",
        "/api/bulk/sessions/restore",
        "/api/bulk/sessions/export-metadata",
        "/api/bulk/sessions/info",
        "/api/bulk/operations/",
        "/api/bulk/operations/{operation_id}/",
        "/api/bulk/operations/{operation_id}/status",
        "/api/bulk/operations/{operation_id}/items",
        "/api/bulk/operations/{operation_id}/cancel",
        "/api/bulk/operations/{operation_id}/retry",
        "/api/bulk/operations/{operation_id}/undo",
        "/api/bulk/operations/{operation_id}/report",
        "/api/sessions/",
        "/api/sessions/{session_id}/",
        "/api/download/{filename}",
    } == {p for p in schema["paths"]}
    delete = schema["paths"]["/api/bulk/sessions/delete"]["post"]
    assert {"202", "400", "413", "422", "429"} <= set(delete["responses"])
    assert {s for s in schema["components"]["securitySchemes"]} == {"cookieAuth", "tokenAuth"}
    undo = schema["paths"]["/api/bulk/operations/{operation_id}/undo"]["post"]
    assert {"202", "404", "409", "422", "429"} <= set(undo["responses"])
    report = schema["paths"]["/api/bulk/operations/{operation_id}/report"]["get"]
    assert set(report["responses"]["200"]["content"]) == {"text/csv", "application/json"}
    assert {p["name"] for p in report["parameters"]} == {"operation_id", "format", "outcome"}
    # undo is an operation's action, never one a selection of sessions starts (validate).
    enums = schema["components"]["schemas"]
    assert "undo" in enums["ActionEnum"]["enum"]
    assert "undo" not in enums["SessionActionEnum"]["enum"]
    assert "SessionActionEnum" in json.dumps(enums["ValidateInputRequest"])


def test_every_page_size_in_the_schema_has_the_real_bounds():
    """The paginated views refuse page_size 0 and 1001 (400): the schema says so."""
    out = io.StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    schema = json.loads(out.getvalue())
    found = [
        (path, param["schema"])
        for path, item in schema["paths"].items()
        for operation in item.values()
        for param in operation.get("parameters", [])
        if param["name"] == "page_size"
    ]
    assert {path for path, _ in found} == {
        "/api/bulk/operations/",
        "/api/bulk/operations/{operation_id}/",
        "/api/bulk/operations/{operation_id}/items",
        "/api/sessions/",
    }
    for path, bounds in found:
        assert (bounds.get("minimum"), bounds.get("maximum")) == (1, 1000), path


def test_swagger_ui_is_served(client):
    assert client.get("/api/docs/").status_code == 200


#: Loaded in process from the running app (no server, no network): schema generation
#: touches no database, so this is safe at import time.
schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


TOKEN_KEY = "5c4e3a" + "0" * 34


@schema.auth(refresh_interval=None)
class TokenAuth:
    """Every case is sent as the owner (``Authorization: Token …``); schemathesis knows
    these are real credentials, so its ignored_auth check probes without them."""

    def get(self, case, context) -> str:
        return TOKEN_KEY

    def set(self, case, data, context) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Token {data}"}


@pytest.fixture
def keep_test_connection():
    """Run the WSGI app the way Django's test client does: a real WSGI request ends with
    close_old_connections(), which on PostgreSQL would close the connection holding the
    test's transaction (SQLite's in-memory database ignores it)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token_owner(keep_test_connection, owner, make_session, settings):
    """The owner with a known token, a few sessions in every state, and limits high
    enough that the accepting paths get exercised (429s are tested in api/test_limits.py)."""
    settings.BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER = 10_000
    settings.BULKOPS_RATE_LIMITS = {kind: "100000/m" for kind in settings.BULKOPS_RATE_LIMITS}
    for status in ("active", "closed", "archived", "processing"):
        make_session(owner, status=status)
    make_session(owner, deleted=True)
    Token.objects.create(user=owner, key=TOKEN_KEY)
    return owner


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, token_owner):
    case.call_and_validate(
        excluded_checks=[positive_data_acceptance],
        additional_checks=[positive_data_acceptance_unless_state_dependent],
    )
