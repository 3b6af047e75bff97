"""The confirmation page carries validate's ``selection_token``: Confirm runs exactly what
the page showed; when the selection drifted in between, the page comes back with the new
counts and a message, and nothing is created."""

from __future__ import annotations

from unittest import mock

import pytest

from bulkops.models import BulkOperation, BulkOperationItem, Session
from bulkops.tests.admin.test_admin import bulk_sessions, changelist, confirm, first_pass
from bulkops.tests.support.helpers import run_worker

pytestmark = pytest.mark.django_db


def page_tokens(page) -> dict[str, str]:
    """The hidden fields Confirm posts back."""
    html = page.content.decode()
    tokens = {
        "_bulk_token": page.context["confirm_token"],
        "_bulk_selection_token": page.context["selection_token"],
    }
    for value in tokens.values():
        assert f'value="{value}"' in html
    return tokens


def assert_nothing_created() -> None:
    assert not BulkOperation.objects.exists()
    assert not BulkOperationItem.objects.exists()


def test_confirm_after_a_session_became_processing_shows_the_new_counts(
    admin_client, owner, make_session
):
    ids = [make_session(owner, id=f"s-{i}").pk for i in range(3)]
    page = first_pass(admin_client, "close_sessions", ids)
    assert page.context["result"]["eligible_count"] == 3
    Session.objects.filter(pk="s-1").update(status="processing")

    again = confirm(admin_client, "close_sessions", ids, **page_tokens(page))
    assert again.status_code == 200
    assert_nothing_created()
    assert set(Session.objects.values_list("status", flat=True)) == {"active", "processing"}
    notice = again.context["drift_notice"]
    assert "Nothing was done" in notice
    assert "3 eligible of 3 sessions then, 2 eligible of 3 sessions now" in notice
    assert notice in again.content.decode()
    assert again.context["result"]["eligible_count"] == 2

    # Confirming the refreshed page runs what it now shows: the two eligible sessions
    # (the processing one is left out as previewed).
    done = confirm(admin_client, "close_sessions", ids, **page_tokens(again))
    assert done.status_code == 302
    op = BulkOperation.objects.get()
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded, op.failed) == ("completed", 2, 0)
    assert op.excluded == {"ineligible": [{"reason": "processing", "count": 1, "sample": ["s-1"]}]}


def test_select_all_confirm_after_a_new_match_appeared_creates_nothing(admin_client, owner):
    bulk_sessions(owner, 120)
    query = "?status__exact=active"
    shown = [s.pk for s in admin_client.get(changelist(query)).context["cl"].result_list]
    page = first_pass(admin_client, "archive_sessions", shown, query=query, select_across=True)
    assert page.context["selection_filter"] == {"deleted": False, "status": "active"}
    assert page.context["result"]["eligible_count"] == 120
    Session.objects.create(id="late-1", owner=owner, title="Arrived late")

    again = confirm(
        admin_client,
        "archive_sessions",
        shown,
        query=query,
        select_across=True,
        **page_tokens(page),
    )
    assert again.status_code == 200
    assert (
        "120 eligible of 120 sessions then, 121 eligible of 121 sessions now"
        in (again.context["drift_notice"])
    )
    assert_nothing_created()
    assert not Session.objects.filter(status="archived").exists()


def test_a_forged_selection_token_creates_nothing(admin_client, owner, make_session):
    s = make_session(owner)
    page = first_pass(admin_client, "close_sessions", [s.pk])
    tokens = {**page_tokens(page), "_bulk_selection_token": "forged:token:value"}
    again = confirm(admin_client, "close_sessions", [s.pk], **tokens)
    assert again.status_code == 200
    assert "could not be verified" in again.context["drift_notice"]
    assert_nothing_created()


def test_ticking_cascade_without_updating_the_preview_shows_the_preview_first(
    admin_client, owner, make_session
):
    s = make_session(owner, exports=2)
    page = first_pass(admin_client, "hard_delete_sessions", [s.pk])
    again = confirm(
        admin_client, "hard_delete_sessions", [s.pk], cascade_exports="on", **page_tokens(page)
    )
    assert again.status_code == 200
    assert "options changed" in again.context["drift_notice"]
    assert "2 exports of these sessions will be deleted too" in again.content.decode()
    assert_nothing_created()
    assert Session.objects.filter(pk=s.pk).exists()


def test_the_page_states_the_exact_count_and_a_sample_of_titles(admin_client, owner):
    bulk_sessions(owner, 14, title="Quarter")
    ids = [f"bulk-{i:05d}" for i in range(14)]
    page = first_pass(admin_client, "close_sessions", ids)
    html = page.content.decode()
    assert 'data-count="will-apply">14</strong>' in html
    assert page.context["sample_titles"] == [f"Quarter {i}" for i in range(10)]
    assert "<q>Quarter 9</q>" in html and "<q>Quarter 10</q>" not in html
    assert "and 4 more" in html


def test_confirming_a_page_older_than_the_token_age_creates_nothing(
    admin_client, owner, make_session, settings
):
    settings.BULKOPS_SELECTION_TOKEN_MAX_AGE_SECONDS = 60
    s = make_session(owner)
    with mock.patch("django.core.signing.time.time", return_value=1_800_000_000):
        page = first_pass(admin_client, "close_sessions", [s.pk])
    with mock.patch("django.core.signing.time.time", return_value=1_800_000_061):
        again = confirm(admin_client, "close_sessions", [s.pk], **page_tokens(page))
    assert again.status_code == 200
    assert "too old to trust" in again.context["drift_notice"]
    assert_nothing_created()
    assert Session.objects.get(pk=s.pk).status == "active"
