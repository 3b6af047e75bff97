"""The confirmation page's "run on" choice: by default Confirm runs on the eligible
sessions only, and what the page previewed as skipped or not eligible is shown apart
("left out as previewed") on the progress page and in the operations list — never as a
failure. "All selected sessions" keeps the API's behaviour (every id an item)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from bulkops.models import BulkOperation, Session
from bulkops.tests.admin.test_admin import confirm, first_pass
from bulkops.tests.support.helpers import run_worker

pytestmark = pytest.mark.django_db
OPERATIONS = reverse("admin:bulkops_bulkoperation_changelist")


def progress(op: BulkOperation) -> str:
    return reverse("admin:bulkops_bulkoperation_progress", args=[op.pk])


@pytest.fixture
def eight(superuser, make_session):
    """Five archivable sessions, two archived already, one a pipeline works on."""
    for n in range(5):
        make_session(superuser, id=f"r-{n}", title=f"Report {n}")
    for n in range(2):
        make_session(superuser, id=f"r-arch-{n}", status="archived")
    make_session(superuser, id="r-busy", status="processing")
    return sorted(Session.objects.values_list("pk", flat=True))


def test_the_page_offers_the_choice_with_the_eligible_only_default(admin_client, eight):
    html = first_pass(admin_client, "archive_sessions", eight).content.decode()
    assert "Only the 5 eligible sessions" in html and "All 8 selected sessions" in html
    assert 'name="run_on" value="eligible" checked' in html
    assert 'name="run_on" value="all" checked' not in html


def test_no_choice_when_every_selected_session_is_eligible(admin_client, eight):
    html = first_pass(admin_client, "archive_sessions", ["r-0", "r-1"]).content.decode()
    assert 'name="run_on"' not in html


def test_an_eligible_only_run_ends_completed_and_shows_what_was_left_out(
    admin_client, superuser, eight
):
    confirm(admin_client, "archive_sessions", eight)
    op = BulkOperation.objects.get()
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.total, op.succeeded, op.failed) == ("completed", 5, 5, 0)
    assert Session.objects.filter(status="archived").count() == 7
    assert Session.objects.get(pk="r-busy").status == "processing"

    page = admin_client.get(progress(op))
    html = page.content.decode()
    assert "Left out as previewed: 3 sessions" in html
    left_out = html.split('id="left-out"')[1].split("</div>")[0]
    assert "r-busy" in left_out and "A pipeline is working on this session" in left_out
    assert "r-arch-0" in left_out and "already archived" in left_out
    assert 'id="failed-items"' not in html
    assert "Retry failed items" not in html

    listing = admin_client.get(OPERATIONS).content.decode()
    assert "3 left out as previewed" in listing
    assert "bulkops-status-completed" in listing


def test_all_selected_sessions_records_the_previewed_ones_as_items(admin_client, eight):
    confirm(admin_client, "archive_sessions", eight, run_on="all")
    op = BulkOperation.objects.get()
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.total, op.succeeded, op.skipped, op.failed) == ("partial", 8, 5, 2, 1)
    assert op.excluded == {}
    html = admin_client.get(progress(op)).content.decode()
    assert 'id="left-out"' not in html and 'id="failed-items"' in html


def test_a_confirm_sent_twice_with_either_choice_starts_one_operation(admin_client, eight):
    page = first_pass(admin_client, "archive_sessions", eight)
    token = page.context["confirm_token"]
    for _ in range(2):
        confirm(admin_client, "archive_sessions", eight, _bulk_token=token)
    assert BulkOperation.objects.count() == 1
