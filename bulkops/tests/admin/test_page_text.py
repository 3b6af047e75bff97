"""The small things a person reads on the admin pages: each breadcrumb level named once,
menu entries that are sentences, sentences that end once, options offered only where
they mean something, and numbers that do not shout (no accent on a zero, no rate for a
run too short to have one)."""

from __future__ import annotations

import datetime
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from bulkops.models import BulkOperation
from bulkops.tests.admin.test_admin import first_pass, offered_actions
from bulkops.tests.support.helpers import execute

pytestmark = pytest.mark.django_db


@pytest.fixture
def active(make_session, owner):
    return make_session(owner, id="s-active")


def progress(op: BulkOperation) -> str:
    return reverse("admin:bulkops_bulkoperation_progress", args=[op.pk])


def breadcrumb(html: str) -> list[str]:
    crumbs = html.split('<div class="breadcrumbs">')[1].split("</div>")[0]
    return [re.sub(r"<[^>]+>", "", part).strip() for part in crumbs.split("&rsaquo;")]


def test_the_breadcrumb_names_the_app_and_the_list_apart(admin_client):
    html = admin_client.get(reverse("admin:bulkops_bulkoperation_changelist")).content.decode()
    assert breadcrumb(html) == ["Home", "Session management", "Bulk operations"]
    html = admin_client.get(reverse("admin:bulkops_session_changelist")).content.decode()
    assert breadcrumb(html) == ["Home", "Session management", "Sessions"]


def test_export_menu_entries_read_as_sentences(admin_client):
    response = admin_client.get(reverse("admin:bulkops_session_changelist"))
    labels = dict(response.context["action_form"].fields["action"].choices)
    assert labels["export_sessions_csv"] == "Export selected sessions as CSV"
    assert labels["export_sessions_json"] == "Export selected sessions as JSON"
    assert labels["close_sessions"] == "Close selected sessions"
    assert offered_actions(admin_client) >= {"export_sessions_csv", "close_sessions"}


def test_the_filter_sentence_ends_with_its_period(admin_client, owner, make_session):
    for n in range(3):
        make_session(owner, id=f"g-{n}", title=f"Gamma {n}")
    response = admin_client.post(
        reverse("admin:bulkops_session_changelist") + "?q=Gamma",
        {"action": "close_sessions", "index": "0", "select_across": "1", "_selected_action": "g-0"},
    )
    html = response.content.decode()
    assert "search=Gamma</code>.</span>" in html
    assert "Nothing has changed yet" in html


def test_the_failure_threshold_is_offered_where_it_means_something(admin_client, active):
    close = first_pass(admin_client, "close_sessions", ["s-active"]).content.decode()
    assert 'name="max_failures"' in close
    assert "Stop after more than this many failures" in close
    export = first_pass(admin_client, "export_sessions_csv", ["s-active"]).content.decode()
    assert 'name="max_failures"' not in export


def test_zero_counts_carry_no_accent_and_a_tiny_run_no_rate(admin_client, superuser, active):
    op = execute(superuser, "close", ["s-active"])
    BulkOperation.objects.filter(pk=op.pk).update(
        finished_at=op.started_at + datetime.timedelta(milliseconds=12)
    )
    page = admin_client.get(progress(op))
    html = page.content.decode()
    assert 'class="bulkops-stat-succeeded"' in html  # 1: its green accent
    for zero in ("skipped", "failed", "cancelled"):
        assert f'class="bulkops-stat-{zero} bulkops-zero"' in html
    assert page.context["state"]["rate"] is None
    assert '<dd data-field="rate">—</dd>' in html
    assert '<dd data-field="duration">12 ms</dd>' in html


def test_a_long_enough_run_shows_its_rate(admin_client, superuser, active):
    op = execute(superuser, "close", ["s-active"])
    BulkOperation.objects.filter(pk=op.pk).update(
        finished_at=op.started_at + datetime.timedelta(seconds=2)
    )
    page = admin_client.get(progress(op))
    assert page.context["state"]["rate"] == 0.5
    assert '<dd data-field="duration">2.0 s</dd>' in page.content.decode()


def test_the_download_sentence_ends_once(admin_client, superuser, active):
    op = execute(superuser, "export", ["s-active"], format="csv")
    html = admin_client.get(progress(op)).content.decode()
    sentence = html.split("Available until")[1].split("</span>")[0]
    assert timezone.localtime(op.expires_at).strftime("%Y") in sentence
    assert not sentence.rstrip().endswith("..")
