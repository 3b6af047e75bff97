"""Adding a sixth action is one new module: a throwaway action registered here appears
in the API (its endpoint, validate, the OpenAPI schema), the admin (an action on the
changelist, its confirmation form) and the ``bulk`` command — with nothing else edited."""

from __future__ import annotations

import importlib
import io

import pytest
from django.core.management import call_command
from django.db.models import Value
from django.db.models.functions import Concat, Upper
from django.test import override_settings
from django.urls import clear_url_caches

from bulkops.actions import reasons
from bulkops.actions.base import BulkAction, Exposure, Param, SessionRow
from bulkops.actions.registry import register, unregister
from bulkops.actions.sql import AnyOf
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.api import post_json, token_client
from bulkops.tests.support.helpers import run_worker

pytestmark = pytest.mark.django_db


class RetitleAction(BulkAction):
    """Appends a mark to each title (the whole module a new action needs)."""

    action_type = "retitle"
    display_name = "Retitle"
    permission = "bulkops.change_session"
    result_status = "retitled"
    exposure = Exposure(api_path="retitle-all")
    params_spec = {
        "mark": Param(default="star", choices=("star", "flag"), label="Which mark"),
        "shout": Param(default=False, label="Upper-case the title too"),
    }

    def check(self, row: SessionRow) -> str | None:
        return reasons.DELETED if row.deleted_at is not None else None

    def apply(self, *, ids, operation, now) -> None:
        mark = " *" if self.params["mark"] == "star" else " !"
        title = Concat("title", Value(mark))
        Session.objects.filter(AnyOf("pk", ids)).update(
            title=Upper(title) if self.params["shout"] else title, updated_at=now
        )


def _reload_urls() -> None:
    import bulkops.api.urls
    import project.urls

    importlib.reload(bulkops.api.urls)
    importlib.reload(project.urls)
    clear_url_caches()


@pytest.fixture
def retitle():
    register(RetitleAction)
    _reload_urls()
    try:
        with override_settings(ROOT_URLCONF="project.urls"):
            yield RetitleAction
    finally:
        unregister("retitle")
        _reload_urls()


def test_a_registered_action_gets_its_api_endpoint(retitle, owner, make_session):
    make_session(owner, id="s1", title="Plan")
    response = post_json(
        token_client(owner),
        "/api/bulk/sessions/retitle-all",
        {"session_ids": ["s1"], "mark": "flag", "shout": True},
    )
    assert response.status_code == 202, response.content
    op = BulkOperation.objects.get(pk=response.json()["operation_id"])
    assert (op.action, op.params) == ("retitle", {"mark": "flag", "shout": True})
    run_worker()
    assert Session.objects.get(pk="s1").title == "PLAN !"


def test_a_registered_action_refuses_parameters_it_does_not_declare(retitle, owner, make_session):
    make_session(owner, id="s1")
    response = post_json(
        token_client(owner), "/api/bulk/sessions/retitle-all", {"session_ids": ["s1"], "atomic": 1}
    )
    assert response.status_code == 400
    assert "atomic" in response.json()
    assert not BulkOperation.objects.exists()


def test_a_registered_action_is_validated_and_in_the_schema(retitle, owner, make_session):
    make_session(owner, id="s1")
    make_session(owner, id="s2", deleted=True)
    client = token_client(owner)
    response = post_json(
        client,
        "/api/bulk/sessions/validate",
        {"action": "retitle", "session_ids": ["s1", "s2"], "mark": "star"},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["eligible_ids"] == ["s1"]
    assert body["ineligible"][0]["reason"] == "deleted"
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert "/api/bulk/sessions/retitle-all" in schema["paths"]
    by_ids = schema["components"]["schemas"]["RetitleInputRequest"]["oneOf"][0]["properties"]
    assert {"session_ids", "mark", "shout"} <= set(by_ids)


def test_a_registered_action_is_offered_in_the_admin(retitle, make_user, make_session, client):
    staff = make_user("boss", staff=True)
    make_session(staff, id="s1", title="Plan")
    client.force_login(staff)
    page = client.get("/admin/bulkops/session/").content.decode()
    assert 'value="retitle_sessions"' in page
    confirm = client.post(
        "/admin/bulkops/session/", {"action": "retitle_sessions", "_selected_action": ["s1"]}
    )
    assert confirm.status_code == 200
    text = confirm.content.decode()
    assert "Which mark" in text and "Upper-case the title too" in text
    assert not BulkOperation.objects.exists()  # the first pass changes nothing


def test_a_registered_action_is_a_bulk_command(retitle, owner, make_session):
    make_session(owner, id="s1", title="Plan")
    out = io.StringIO()
    call_command("bulk", "retitle", "--user", "owner", "--ids", "s1", "--mark", "star", stdout=out)
    op = BulkOperation.objects.get()
    assert (op.action, op.source, op.params) == ("retitle", "cli", {"mark": "star", "shout": False})
    run_worker()
    assert Session.objects.get(pk="s1").title == "Plan *"
