"""The request examples of the OpenAPI schema — what Swagger UI's "Try it out" sends —
work as given on the demo data ``serve`` creates: every id exists and belongs to
``demo``, validate answers 200, every action 202 and its operation ends with no item
failed (an example on ids the data lacks would "work" on a failed operation)."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from bulkops.models import BulkOperation
from bulkops.seeding import seed_demo
from bulkops.tests.support.api import ACTION_PATHS, VALIDATE, post_json, token_client
from bulkops.tests.support.helpers import run_worker

pytestmark = pytest.mark.django_db


def request_examples() -> dict[str, list[dict]]:
    """{path: [example body, …]} of every POST with request examples in the schema."""
    out = io.StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    found = {}
    for path, item in json.loads(out.getvalue())["paths"].items():
        content = item.get("post", {}).get("requestBody", {}).get("content", {})
        examples = content.get("application/json", {}).get("examples", {})
        if examples:
            found[path] = [example["value"] for example in examples.values()]
    return found


@pytest.fixture
def demo(tmp_path):
    seed_demo(credentials_file=tmp_path / "demo_credentials.json")
    return token_client(get_user_model().objects.get(username="demo"))


def test_the_examples_are_those_of_validate_and_every_action():
    assert set(request_examples()) == {VALIDATE, *ACTION_PATHS.values()}


def test_the_validate_example_previews_demo_sessions(demo):
    (body,) = request_examples()[VALIDATE]
    answer = post_json(demo, VALIDATE, body)
    assert answer.status_code == 200, answer.json()
    # It shows each part of the partition: one eligible, one skipped, one not found.
    assert answer.json()["eligible_ids"] == ["demo-000000"]
    assert [s["session_id"] for s in answer.json()["skipped"]] == ["demo-000001"]
    assert [(i["session_id"], i["reason"]) for i in answer.json()["ineligible"]] == [
        ("nope", "not_found")
    ]


@pytest.mark.parametrize("action", sorted(ACTION_PATHS))
def test_each_action_example_runs_on_demo_sessions_without_a_failure(demo, action):
    path = ACTION_PATHS[action]
    for body in request_examples()[path]:
        answer = post_json(demo, path, body)
        assert answer.status_code == 202, answer.json()
        run_worker()
        operation = BulkOperation.objects.get(pk=answer.json()["operation_id"])
        assert operation.status == "completed", (body, operation.error)
        assert operation.failed == 0
        assert operation.succeeded >= 1, body
