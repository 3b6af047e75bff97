"""The session changelist's "Select all N matching" past the per-operation cap
(PostgreSQL): for a user with ``bulkops.run_large_operation`` the bulk actions send the
changelist's filter as one large operation; the confirmation page shows the exact
counts, the counts by reason and a few samples of each (never a table of every
matching session) and carries validate's drift token; the progress page shows the
rate, the ETA and how many slices are running. Everyone else keeps the cap."""

from __future__ import annotations

import pytest
from django.urls import reverse

from bulkops.engine import SAMPLES_PER_REASON
from bulkops.models import BulkOperation, Session
from bulkops.tests.admin.test_admin import confirm, first_pass, messages_of
from bulkops.tests.support.helpers import run_worker
from bulkops.tests.support.large import LARGE_PERMS, seed_sessions, seeded_counts
from bulkops.tests.support.processes import using_postgres

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL"),
    pytest.mark.django_db,
]

SIZE = 3000
CAP = 100
COUNTS = seeded_counts(SIZE)  # 2,100 active, 600 closed, 300 processing
PAGE = ["large-0000000", "large-0000001"]  # ticked on the page before "select all"


@pytest.fixture(autouse=True)
def seeded(owner, settings):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = CAP
    settings.BULKOPS_CHUNK_SECONDS = 0
    settings.BULKOPS_CHUNK_SIZE = 500
    seed_sessions(owner, SIZE)


@pytest.fixture
def ops(client, make_user):
    client.force_login(make_user("ops", staff=True, perms=LARGE_PERMS))
    return client


def test_the_confirmation_page_counts_by_reason_with_samples_and_the_token(ops):
    response = first_pass(ops, "close_sessions", PAGE, select_across=True)
    assert response.status_code == 200
    context = response.context
    assert context["large"] is True
    assert context["selection_filter"] == {"deleted": False}
    assert context["selected_count"] == SIZE
    result = context["result"]
    assert (result["eligible_count"], result["skipped_count"], result["ineligible_count"]) == (
        COUNTS["active"],
        COUNTS["closed"],
        COUNTS["processing"],
    )
    assert result["counts_by_reason"] == {
        "already_closed": COUNTS["closed"],
        "processing": COUNTS["processing"],
    }
    assert context["skipped_groups"] == [
        {"reason": "already_closed", "message": "The session is already closed.", "count": 600}
    ]
    assert [g["count"] for g in context["ineligible_groups"]] == [COUNTS["processing"]]
    html = response.content.decode()
    # Samples, never every matching session: 20 per reason and of the eligible.
    assert html.count("<td><code>large-") == 3 * SAMPLES_PER_REASON
    assert 'data-count="matching">3000<' in html
    assert "Samples: at most 20 sessions per reason" in html
    assert f'value="{result["selection_token"]}"' in html and result["selection_token"]
    assert 'name="run_on"' not in html  # past the cap it runs on every matching session
    assert len(html) < 60_000
    assert not BulkOperation.objects.exists()


def test_confirm_starts_one_large_operation_that_the_workers_run(ops):
    token = first_pass(ops, "close_sessions", PAGE, select_across=True).context["result"][
        "selection_token"
    ]
    response = confirm(ops, "close_sessions", PAGE, select_across=True, _bulk_selection_token=token)
    op = BulkOperation.objects.get()
    assert response.status_code == 302 and response.url.endswith(f"/{op.pk}/progress/")
    assert op.is_large and op.total == SIZE and op.source == "admin"
    assert op.selection["filter"] == {"deleted": False} and op.excluded in ({}, None)
    assert not op.items.exists()  # nothing written per session at creation
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded, op.skipped, op.failed) == ("partial", 2100, 600, 300)
    assert Session.objects.filter(status="closed").count() == 2700


def test_a_selection_that_drifted_starts_nothing_and_shows_the_new_counts(ops):
    token = first_pass(ops, "close_sessions", PAGE, select_across=True).context["result"][
        "selection_token"
    ]
    Session.objects.filter(pk="large-0000002").update(status="archived")
    response = confirm(ops, "close_sessions", PAGE, select_across=True, _bulk_selection_token=token)
    assert response.status_code == 200
    assert "the selection changed after you reviewed it" in response.context["drift_notice"]
    assert response.context["result"]["counts_by_reason"]["archived"] == 1
    assert not BulkOperation.objects.exists()


def test_the_progress_page_shows_rate_eta_and_slices_running(ops):
    confirm(ops, "close_sessions", PAGE, select_across=True)
    op = BulkOperation.objects.get()
    progress = ops.get(reverse("admin:bulkops_bulkoperation_progress", args=[op.pk]))
    html = progress.content.decode()
    slices = op.slices.count()
    assert slices > 1
    assert "Slices running" in html and f"0 of {slices}" in html
    assert 'data-field="rate"' in html and 'data-field="eta"' in html
    status = ops.get(reverse("admin:bulkops_bulkoperation_status", args=[op.pk])).json()
    assert status["slices"] == {"total": slices, "running": 0, "done": 0}
    run_worker()
    status = ops.get(reverse("admin:bulkops_bulkoperation_status", args=[op.pk])).json()
    assert status["slices"] == {"total": slices, "running": 0, "done": slices}
    assert status["status"] == "partial"
    finished = ops.get(reverse("admin:bulkops_bulkoperation_progress", args=[op.pk]))
    assert "Slices running" not in finished.content.decode()


def test_without_the_permission_the_cap_stays(client, make_user):
    perms = [p for p in LARGE_PERMS if p != "bulkops.run_large_operation"]
    client.force_login(make_user("staff", staff=True, perms=perms))
    response = first_pass(client, "close_sessions", PAGE, select_across=True)
    assert response.status_code == 302
    assert messages_of(response) == [
        "More than 100 sessions match the filter, and close takes at most 100 at once. "
        "Narrow the filter and try again."
    ]
    assert not BulkOperation.objects.exists()


def test_a_changelist_filter_the_selection_filter_cannot_say_is_refused(ops):
    # The admin ANDs the words of a search; a selection filter searches for the text.
    response = first_pass(ops, "close_sessions", PAGE, query="?q=Session+1", select_across=True)
    assert response.status_code == 302
    (message,) = messages_of(response)
    assert "more than the 100 close takes at once" in message
    assert "cannot all be said that way" in message
    assert not BulkOperation.objects.exists()


def test_ticked_rows_stay_ids_within_the_cap(ops):
    first_pass(ops, "close_sessions", PAGE)
    response = confirm(ops, "close_sessions", PAGE)
    op = BulkOperation.objects.get()
    assert response.status_code == 302 and not op.is_large and op.total == 2


def test_the_large_confirmation_page_offers_no_all_or_nothing(ops):
    """A large operation never runs in one transaction: the page has no "atomic" box, and
    a Confirm starts a plain large operation."""
    response = first_pass(ops, "close_sessions", PAGE, select_across=True)
    assert response.context["large"] is True
    assert "atomic" not in response.context["form"].fields
    assert b'name="atomic"' not in response.content
    small = first_pass(ops, "close_sessions", PAGE)
    assert "atomic" in small.context["form"].fields
