"""A large operation's succeeded and skipped sessions have no item row (their chunk rows
hold them); the admin's item counts and list, its session history, the undo page's
"after" status and the CLI's reason summary still find and count every one of them
(PostgreSQL: large operations run there only)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from bulkops.engine import Selection, operation_create
from bulkops.itemsummary import outcome_counts, reason_counts, session_items
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.helpers import run_worker
from bulkops.tests.support.large import LARGE_PERMS, seed_sessions, seeded_counts
from bulkops.tests.support.processes import using_postgres

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL"),
    pytest.mark.django_db,
]

SIZE = 300
COUNTS = seeded_counts(SIZE)  # 210 active, 60 closed, 30 processing
ACTIVE, CLOSED, PROCESSING = "large-0000000", "large-0000007", "large-0000009"


@pytest.fixture
def staff(make_user, settings):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 100
    settings.BULKOPS_CHUNK_SECONDS = 0
    settings.BULKOPS_CHUNK_SIZE = 50
    user = make_user("ops", staff=True, perms=LARGE_PERMS)
    seed_sessions(user, SIZE)
    return user


@pytest.fixture
def closed(staff) -> BulkOperation:
    op = operation_create(user=staff, action="close", selection=Selection(filter={})).operation
    assert op.is_large
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded, op.skipped, op.failed) == (
        "partial",
        COUNTS["active"],
        COUNTS["closed"],
        COUNTS["processing"],
    )
    assert op.items.count() == COUNTS["processing"]  # only failed sessions have an item
    return op


def test_outcome_and_reason_counts_include_the_sessions_kept_in_chunks(closed):
    assert outcome_counts(closed) == {
        "succeeded": COUNTS["active"],
        "skipped": COUNTS["closed"],
        "failed": COUNTS["processing"],
    }
    assert reason_counts(closed, outcomes=("failed", "skipped")) == {
        "already_closed": COUNTS["closed"],
        "processing": COUNTS["processing"],
    }


def test_a_sessions_items_are_found_in_the_chunks_too(closed):
    [done] = session_items(operation_ids=[closed.pk], session_id=ACTIVE)
    assert (done.operation.pk, done.outcome, done.previous_status) == (
        closed.pk,
        "succeeded",
        "active",
    )
    [skipped] = session_items(operation_ids=[closed.pk], session_id=CLOSED)
    assert (skipped.outcome, skipped.reason) == ("skipped", "already_closed")
    assert skipped.message  # the reason's sentence
    [failed] = session_items(operation_ids=[closed.pk], session_id=PROCESSING)
    assert (failed.outcome, failed.reason, failed.pk is not None) == ("failed", "processing", True)
    assert session_items(operation_ids=[closed.pk], session_id="large-9999999") == []


def test_the_admin_lists_and_counts_every_item_and_shows_the_session_history(closed, staff, client):
    client.force_login(staff)
    page = client.get(reverse("admin:bulkops_bulkoperation_change", args=[closed.pk]))
    assert page.status_code == 200
    assert page.context["items_total"] == SIZE
    counts = {o["value"]: o["count"] for o in page.context["items_outcomes"]}
    assert (counts["succeeded"], counts["skipped"], counts["failed"]) == (
        COUNTS["active"],
        COUNTS["closed"],
        COUNTS["processing"],
    )
    listed = [(i.session_id, i.outcome) for i in page.context["items_page"]]
    assert listed[:3] == [
        (ACTIVE, "succeeded"),
        ("large-0000001", "succeeded"),
        ("large-0000002", "succeeded"),
    ]
    assert b"Succeeded" in page.content
    skipped = client.get(
        reverse("admin:bulkops_bulkoperation_change", args=[closed.pk]), {"outcome": "skipped"}
    )
    assert {i.outcome for i in skipped.context["items_page"]} == {"skipped"}
    assert skipped.context["items_page"].paginator.count == COUNTS["closed"]

    history = client.get(reverse("admin:bulkops_session_change", args=[ACTIVE])).context["history"]
    assert [(i.operation.pk, i.outcome) for i in history] == [(closed.pk, "succeeded")]


def test_the_undo_page_shows_the_status_a_session_had_before(closed):
    from bulkops.admin.undo import with_status_after

    rows = with_status_after(closed, [{"session_id": ACTIVE, "status": "closed"}])
    assert rows[0]["after"] == "active"


def test_the_cli_summary_counts_skipped_reasons_from_the_chunks(closed, capsys):
    from bulkops.management.commands.bulk import Command

    Command(stdout=None).summary(closed)  # the summary ``--wait`` prints at the end
    out = capsys.readouterr().out
    assert f'"already_closed": {COUNTS["closed"]}' in out
    assert f'"processing": {COUNTS["processing"]}' in out
    assert Session.objects.filter(status="closed").count() == COUNTS["active"] + COUNTS["closed"]
