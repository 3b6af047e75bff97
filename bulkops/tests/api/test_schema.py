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
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bulkops.models import BulkOperation
from bulkops.ratelimits import rates
from bulkops.tests.support import api as support
from bulkops.tests.support.helpers import execute
from project.wsgi import application

pytestmark = pytest.mark.django_db
fast_password_hasher = support.fast_password_hasher

#: Refusals that depend on the data, not on the shape of the request: a schema-valid
#: filter can match no session (400) or too many (400, DESIGN §5), an
#: Idempotency-Key can have been used with another body (422, DESIGN §5), and a
#: selection_token is valid only when validate signed it (400: no schema can say that).
STATE_DEPENDENT = (
    "No sessions match the filter",
    "Narrow the filter",
    "idempotency_conflict",
    "Not a selection_token issued by validate",
)


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
        "/api/bulk/operations/{operation_id}/pause",
        "/api/bulk/operations/{operation_id}/resume",
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
    for verb in ("cancel", "pause", "resume", "retry", "undo"):
        control = schema["paths"][f"/api/bulk/operations/{{operation_id}}/{verb}"]["post"]
        # No body, or {}: an optional body with no properties and nothing else allowed.
        body = control["requestBody"]
        assert not body.get("required", False)
        ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert schema["components"]["schemas"][ref].get("additionalProperties") is False
        assert not schema["components"]["schemas"][ref].get("properties")
        assert {"202", "404", "409"} <= set(control["responses"])
    for body in schema["components"]["schemas"]["CloseInputRequest"]["oneOf"]:
        assert body["properties"]["max_failures"] == {
            **body["properties"]["max_failures"],
            "type": "integer",
            "minimum": 0,
        }
    assert "paused" in schema["components"]["schemas"]["OperationStatus"]["enum"]
    undo = schema["paths"]["/api/bulk/operations/{operation_id}/undo"]["post"]
    assert {"202", "404", "409", "422", "429"} <= set(undo["responses"])
    report = schema["paths"]["/api/bulk/operations/{operation_id}/report"]["get"]
    assert set(report["responses"]["200"]["content"]) == {"text/csv", "application/json"}
    assert {p["name"] for p in report["parameters"]} == {"operation_id", "format", "outcome"}
    # undo is an operation's action, never one a selection of sessions starts (validate).
    enums = schema["components"]["schemas"]
    assert "undo" in enums["ActionEnum"]["enum"]


def test_validate_body_has_one_branch_per_action_with_exactly_its_parameters():
    """A parameter another action takes is refused by validate (400), so no branch
    offers it: a generated body the schema allows is one the server accepts."""
    out = io.StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    enums = json.loads(out.getvalue())["components"]["schemas"]
    branches = {
        (b["properties"]["action"]["allOf"][0]["enum"][0], b["required"][0]): set(b["properties"])
        for b in enums["ValidateInputRequest"]["oneOf"]
    }
    common = {"action", "reason"}
    assert branches == {
        (action, key): {key, *common, *params}
        for action, params in {
            "archive": {"atomic"},
            "close": {"atomic"},
            "delete": {"soft_delete", "cascade_exports", "atomic"},
            "export": {"format", "include_details"},
            "restore": set(),
        }.items()
        for key in ("session_ids", "filter")
    }
    assert all(b["additionalProperties"] is False for b in enums["ValidateInputRequest"]["oneOf"])


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
    settings.BULKOPS_RATE_LIMITS = {scope: "100000/m" for scope in rates()}
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


@pytest.fixture
def failed_operation(token_owner, make_session):
    """A finished close whose one item failed (the session was processing), then made
    eligible: retryable any number of times."""
    session = make_session(token_owner, status="processing")
    operation = execute(token_owner, "close", [session.pk])
    session.status = "active"
    session.save(update_fields=["status"])
    assert operation.failed == 1
    return operation


@pytest.mark.parametrize("verb", ["retry", "cancel"])
def test_every_body_the_schema_allows_for_retry_and_cancel_is_accepted(failed_operation, verb):
    """Issue 12: what the schema declares for these bodies (none, or ``{}``) is what the
    view takes. Generated positive cases (Idempotency-Key headers included) against a
    real retryable operation are answered 202 by retry (409 by cancel: it has finished);
    never a 400."""
    endpoint = schema[f"/api/bulk/operations/{{operation_id}}/{verb}"]["POST"]
    expected = 202 if verb == "retry" else 409

    @given(case=endpoint.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        case.path_parameters = {"operation_id": failed_operation.pk}
        response = case.call()
        assert response.status_code in (expected, 422), (case.body, response.text)
        if response.status_code == 422:  # a generated key reused with another body
            assert "idempotency_conflict" in response.text

    check()
    retries = BulkOperation.objects.filter(reason=f"Retry of {failed_operation.pk}")
    assert (retries.count() > 0) == (verb == "retry")


def test_every_body_the_schema_allows_for_restore_is_accepted(token_owner):
    """Positive restore bodies are accepted (202), or refused only for what depends on
    the data: a filter that matches no deleted session, a reused Idempotency-Key."""
    endpoint = schema["/api/bulk/sessions/restore"]["POST"]

    @given(case=endpoint.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call()
        if response.status_code in (400, 422):
            assert any(marker in response.text for marker in STATE_DEPENDENT), (
                case.body,
                response.text,
            )
        else:
            assert response.status_code == 202, (case.body, response.text)

    check()
