"""The admin's Pause / Resume buttons on the progress page, the paused status in the
list, and the failure threshold on the confirmation page (issue 10 §4)."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from bulkops.engine import Selection, operation_create, operation_pause
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.helpers import outcomes, run_worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def op(superuser, make_session):
    ids = [make_session(superuser, id=f"s-{i}").pk for i in range(3)]
    return operation_create(
        user=superuser, action="close", selection=Selection(session_ids=ids)
    ).operation


def page(client, op) -> str:
    response = client.get(reverse("admin:bulkops_bulkoperation_progress", args=[op.pk]))
    assert response.status_code == 200
    return response.content.decode()


def post(client, name: str, op):
    return client.post(reverse(f"admin:bulkops_bulkoperation_{name}", args=[op.pk]))


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_a_pending_operation_offers_pause_and_cancel_not_resume(admin_client, op):
    html = page(admin_client, op)
    assert "Pause operation" in html and "Cancel operation" in html
    assert "Resume operation" not in html


def test_pause_button_pauses_and_the_page_then_offers_resume(admin_client, op):
    response = post(admin_client, "pause", op)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:bulkops_bulkoperation_progress", args=[op.pk])
    assert messages_of(response) == ["Paused; resume it when you are ready."]
    op.refresh_from_db()
    assert op.status == "paused"
    html = page(admin_client, op)
    assert "Resume operation" in html and "Cancel operation" in html
    assert "Pause operation" not in html
    assert "bulkops-status-paused" in html and "Paused: no worker is running it" in html


def test_resume_button_queues_it_again_and_the_worker_finishes_it(admin_client, op):
    operation_pause(operation=op)
    response = post(admin_client, "resume", op)
    assert messages_of(response) == ["Resumed: the operation is queued again."]
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded) == ("completed", 3)
    assert Session.objects.filter(status="closed").count() == 3


def test_pausing_a_running_operation_says_it_stops_after_the_chunk(admin_client, op):
    BulkOperation.objects.filter(pk=op.pk).update(status="running")
    response = post(admin_client, "pause", op)
    assert messages_of(response) == ["Pausing after the current chunk…"]
    html = page(admin_client, op)
    assert "Pausing after the current chunk" in html and "Pause operation" not in html


def test_a_wrong_state_is_a_warning_message_and_changes_nothing(admin_client, op):
    run_worker()
    op.refresh_from_db()
    before = BulkOperation.objects.values().get(pk=op.pk)
    post(admin_client, "pause", op)
    response = post(admin_client, "resume", op)
    assert response.status_code == 302
    assert messages_of(response) == [
        "The operation has already finished (completed); there is nothing to pause.",
        "Only a paused operation can be resumed; this one is completed.",
    ]
    assert BulkOperation.objects.values().get(pk=op.pk) == before
    html = page(admin_client, op)
    assert "Pause operation" not in html and "Resume operation" not in html


def test_pause_and_resume_need_post(admin_client, op):
    for name in ("pause", "resume"):
        url = reverse(f"admin:bulkops_bulkoperation_{name}", args=[op.pk])
        assert admin_client.get(url).status_code == 405
    op.refresh_from_db()
    assert op.status == "pending"


def test_other_staff_cannot_pause_an_operation_they_cannot_see(client, make_user, op):
    client.force_login(make_user("other", staff=True))
    assert post(client, "pause", op).status_code == 404
    op.refresh_from_db()
    assert op.status == "pending"


def test_the_list_shows_and_filters_paused_operations(admin_client, op, superuser, make_session):
    pending = operation_create(
        user=superuser,
        action="close",
        selection=Selection(session_ids=[make_session(superuser, id="s-other").pk]),
    ).operation
    operation_pause(operation=op)
    changelist = reverse("admin:bulkops_bulkoperation_changelist")
    everything = admin_client.get(changelist)
    paused_only = admin_client.get(changelist + "?status__exact=paused")

    shown = {o.pk: o.get_status_display() for o in everything.context["cl"].result_list}
    assert shown == {op.pk: "Paused", pending.pk: "Pending"}
    assert (
        '<span class="bulkops-badge bulkops-status-paused">Paused</span>'
        in everything.content.decode()
    )
    assert [o.pk for o in paused_only.context["cl"].result_list] == [op.pk]
    assert pending.pk not in paused_only.content.decode()


def test_the_confirmation_page_takes_a_failure_threshold(
    admin_client, superuser, make_session, settings
):
    settings.BULKOPS_CHUNK_SIZE = 1
    for sid in ("a-busy", "b-ok", "c-ok"):
        make_session(superuser, id=sid, status="processing" if sid == "a-busy" else "active")
    fields = {
        "action": "close_sessions",
        "index": "0",
        "select_across": "0",
        "_selected_action": ["a-busy", "b-ok", "c-ok"],
    }
    changelist = reverse("admin:bulkops_session_changelist")
    first = admin_client.post(changelist, fields).content.decode()
    assert 'name="max_failures"' in first
    refused = admin_client.post(
        changelist, {**fields, "post": "yes", "_bulk_confirm": "1", "max_failures": "-1"}
    )
    assert refused.status_code == 200 and not BulkOperation.objects.exists()
    admin_client.post(  # on every selected session: the processing one fails first
        changelist,
        {**fields, "post": "yes", "_bulk_confirm": "1", "max_failures": "0", "run_on": "all"},
    )
    op = BulkOperation.objects.get()
    assert op.params["max_failures"] == 0
    run_worker()
    op.refresh_from_db()
    assert op.status == "failed"
    assert outcomes(op)["b-ok"] == ("cancelled", "failure_threshold")
