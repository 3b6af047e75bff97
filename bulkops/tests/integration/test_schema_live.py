"""schemathesis against the running deployment: daphne with DEBUG off and a db_worker
(PostgreSQL and Redis when the run has them), the schema read from the server itself.

Every operation of the schema gets generated requests, valid and invalid, as the
owner of real data (sessions in every state, finished operations with failed items).
Generated requests are checked like the in-process run (api/test_schema.py), and sent
again with a real operation or session id in the path, whose answers depend on that
operation's state: there, no 5xx and every answer as documented (status, content type,
body). The server log must hold no traceback.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from bulkops.tests.api.test_schema import positive_data_acceptance_unless_state_dependent
from bulkops.tests.support.processes import (
    http,
    seed,
    using_postgres,
    using_redis,
    wait_until,
    worlds,
)

pytestmark = pytest.mark.processes

SCOPES = ("validate", "retry", "undo", "delete", "close", "archive", "restore", "export")
STATES = """
from django.contrib.auth import get_user_model
from django.utils import timezone
from bulkops.models import Session
alice = get_user_model().objects.get(username="alice")
for i, status in enumerate(["closed", "archived", "processing", "active"]):
    Session.objects.create(id=f"st-{status}", owner=alice, title=f"In state {status}",
                           status=status, deleted_at=timezone.now() if i == 3 else None)
"""
AS_DOCUMENTED = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Examples per operation and generation mode (about 20 operations, two modes).
EXAMPLES = 12


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """daphne + a db_worker; alice's token; a finished close with one failed item and
    a finished export, whose ids the real-id requests use."""
    teardown = worlds(tmp_path_factory.mktemp("schema-live"))
    make = next(teardown)
    try:
        limits = {f"BULKOPS_RATE_LIMIT_{scope.upper()}": "100000/m" for scope in SCOPES}
        db, procs = make(
            postgres=using_postgres(),
            redis=using_redis(),
            DEBUG="0",
            SECURE_SSL_REDIRECT="0",
            SECRET_KEY="test-schema-live-" + "k" * 40,
            STATIC_ROOT=str(tmp_path_factory.mktemp("static")),
            BULKOPS_API_DOCS="public",
            BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER="100000",
            **limits,
        )
        token = seed(procs, sessions=20)["token"]
        procs.run("shell", "-c", STATES)
        procs.run("collectstatic", "--no-input", "-v", "0")
        base = procs.server("daphne")
        procs.worker("worker")
        ids = {}
        for name, path, body in (
            ("close", "/api/bulk/sessions/close", {"session_ids": ["s-00001", "st-processing"]}),
            ("export", "/api/bulk/sessions/export-metadata", {"session_ids": ["s-00002"]}),
        ):
            status, answer = http(base, "POST", path, token, body)
            assert status == 202, answer
            ids[name] = answer["operation_id"]
            wait_until(
                lambda i=ids[name]: db.operation(i)["status"] not in ("pending", "running"),
                f"{name} to finish",
            )
        yield {"base": base, "token": token, "ops": ids, "log": procs.tmp_path / "daphne.log"}
    finally:
        next(teardown, None)


def real_ids(case, live) -> list[dict]:
    """The case's path parameters with real ids instead (none when it has no id)."""
    params = case.path_parameters or {}
    if "operation_id" in params:
        return [{**params, "operation_id": op} for op in live["ops"].values()]
    if "session_id" in params:
        return [{**params, "session_id": "s-00003"}]
    return []


def test_schemathesis_finds_no_5xx_and_no_broken_promise_on_the_running_server(live):
    auth = {"Authorization": f"Token {live['token']}"}
    schema = schemathesis.openapi.from_url(live["base"] + "/api/schema/", headers=auth)

    @schema.auth(refresh_interval=None)
    class TokenAuth:
        """Real credentials: schemathesis' ignored_auth check probes without them."""

        def get(self, case, context) -> str:
            return live["token"]

        def set(self, case, data, context) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Token {data}"}

    covered: set[str] = set()

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None,
                      suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
            def check(case):
                covered.add(f"{case.method} {case.path}")
                case.call_and_validate(
                    excluded_checks=[positive_data_acceptance],
                    additional_checks=[positive_data_acceptance_unless_state_dependent],
                )
                for params in real_ids(case, live):
                    # A real operation's answers depend on its state (409 once it is
                    # finished, undone, …), and the case's metadata still describes the
                    # generated id: no 5xx, and answers as documented.
                    case.path_parameters = params
                    case.call_and_validate(checks=AS_DOCUMENTED)

            try:
                check()
            except Unsatisfiable:
                # Nothing to make invalid (no parameters, no body): positive cases only.
                assert mode == GenerationMode.NEGATIVE, operation.label

    assert len(covered) >= 20, sorted(covered)
    log = live["log"].read_text()
    assert "Traceback" not in log, log[-3000:]
