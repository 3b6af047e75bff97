"""A session's admin page answers "what happened to this one?": the bulk operations that
touched it — newest first, with who ran them, the operation's status and this session's
outcome and reason — among the operations the admin shows the user (their own; a
superuser everyone's) since the session was created, the latest 5,000 of them at most."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from bulkops import selectors
from bulkops.admin.sessions import SessionAdmin
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.helpers import execute
from bulkops.tests.support.processes import using_postgres

pytestmark = pytest.mark.django_db


def page_of(client, session_id: str):
    response = client.get(reverse("admin:bulkops_session_change", args=[session_id]))
    assert response.status_code == 200
    return response


@pytest.fixture
def touched(superuser, make_session):
    """``h-1`` closed, then failed by an archive while a pipeline worked on it."""
    make_session(superuser, id="h-1")
    make_session(superuser, id="h-2")
    close = execute(superuser, "close", ["h-1", "h-2"])
    Session.objects.filter(pk="h-1").update(status="processing")
    archive = execute(superuser, "archive", ["h-1", "h-2"])
    return close, archive


def test_the_page_lists_the_operations_newest_first_with_this_sessions_outcome(
    admin_client, touched
):
    close, archive = touched
    response = page_of(admin_client, "h-1")
    assert [(i.operation.pk, i.outcome, i.reason) for i in response.context["history"]] == [
        (archive.pk, "failed", "processing"),
        (close.pk, "succeeded", ""),
    ]
    html = response.content.decode().split('id="operations"')[1]
    assert "Bulk operations on this session: 2" in html
    assert reverse("admin:bulkops_bulkoperation_progress", args=[archive.pk]) in html
    assert "A pipeline is working on this session" in html
    assert html.index(archive.pk[:10]) < html.index(close.pk[:10])


def test_staff_see_only_the_operations_the_admin_shows_them(client, make_user, make_session):
    staff = make_user("clerk", staff=True, perms=("bulkops.view_session",))
    other = make_user("other", staff=True, perms=("bulkops.view_session",))
    make_session(staff, id="mine")
    theirs = execute(other, "export", ["mine"], format="csv")
    own = execute(staff, "close", ["mine"])
    client.force_login(staff)
    history = page_of(client, "mine").context["history"]
    assert [i.operation.pk for i in history] == [own.pk]
    assert theirs.pk not in page_of(client, "mine").content.decode()


def test_a_session_no_operation_touched_says_so(admin_client, superuser, make_session):
    make_session(superuser, id="quiet")
    response = page_of(admin_client, "quiet")
    assert response.context["history"] == []
    assert "No bulk operation you can see has touched this session." in response.content.decode()


def test_the_latest_ones_are_listed_and_all_are_counted(
    admin_client, superuser, make_session, monkeypatch
):
    monkeypatch.setattr(SessionAdmin, "HISTORY_LISTED", 2)
    make_session(superuser, id="busy")
    for _ in range(3):
        execute(superuser, "export", ["busy"], format="json")
    response = page_of(admin_client, "busy")
    assert len(response.context["history"]) == 2 and response.context["history_total"] == 3
    assert "The latest 2 are listed." in response.content.decode()
    assert BulkOperation.objects.count() == 3


def test_the_search_is_bounded_to_the_latest_operations_and_says_so(
    admin_client, superuser, make_session, monkeypatch
):
    monkeypatch.setattr(selectors, "HISTORY_SEARCHED", 2)
    monkeypatch.setattr(selectors, "HISTORY_BATCH", 1)  # one query per operation here
    make_session(superuser, id="old-news")
    first = execute(superuser, "close", ["old-news"])
    later = [execute(superuser, "export", ["old-news"], format="csv") for _ in range(2)]
    response = page_of(admin_client, "old-news")
    assert [i.operation.pk for i in response.context["history"]] == [op.pk for op in later[::-1]]
    assert first.pk not in response.content.decode()
    assert "Searched in the latest 2 operations you can see" in response.content.decode()


def test_operations_older_than_the_session_are_not_searched(admin_client, superuser, touched):
    Session.objects.filter(pk="h-1").update(created_at=timezone.now())
    assert page_of(admin_client, "h-1").context["history"] == []


@pytest.mark.skipif(not using_postgres(), reason="PostgreSQL's planner: CI's PostgreSQL pass")
def test_the_history_probes_the_items_unique_index_per_operation(admin_client, touched):
    """No index on the session id alone (every item insert would pay for it): each
    operation searched is one probe of the unique (operation, session_id) index."""
    with CaptureQueriesContext(connection) as captured:
        page_of(admin_client, "h-1")
    [history_sql] = [
        q["sql"]
        for q in captured.captured_queries
        if "bulkops_bulkoperationitem" in q["sql"] and "session_id" in q["sql"]
    ]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {history_sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "item_unique_session_per_operation" in plan, plan
    assert "Seq Scan on bulkops_bulkoperationitem" not in plan, plan
