"""Who may go past the per-operation cap (engine.large.scope): staff with
``bulkops.run_large_operation`` send a filter up to BULKOPS_MAX_LARGE_OPERATION_SESSIONS;
id lists and everyone else keep today's caps and messages."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from bulkops.engine import Selection, action_build
from bulkops.engine.large.scope import LargeSelection, large_cap_check, may_run_large
from bulkops.engine.selection import selection_resolve, selection_target
from bulkops.tests.support.processes import using_postgres

pytestmark = pytest.mark.django_db

LARGE = "bulkops.run_large_operation"
on_postgres = pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL")


@pytest.fixture(autouse=True)
def small_caps(settings):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 3
    settings.BULKOPS_MAX_EXPORT_SESSIONS = 4
    settings.BULKOPS_MAX_LARGE_OPERATION_SESSIONS = 6


@pytest.fixture
def large_staff(make_user):
    return make_user(staff=True, perms=(LARGE, "bulkops.change_session", "bulkops.view_session"))


def target(user, action="close", params=None, **selection):
    act = action_build(user=user, action=action, params=params or {})
    return selection_target(user=user, action=act, selection=Selection(**selection))


def sessions(make_session, owner, n, **kwargs):
    return [make_session(owner, **kwargs).pk for _ in range(n)]


def test_only_active_staff_with_the_permission_may_run_large(make_user):
    assert may_run_large(make_user(staff=True, perms=(LARGE,)))
    assert may_run_large(make_user(superuser=True))
    assert not may_run_large(make_user(perms=(LARGE,)))  # not staff
    assert not may_run_large(make_user(staff=True))
    inactive = make_user(staff=True, perms=(LARGE,))
    inactive.is_active = False
    assert not may_run_large(inactive)


@on_postgres
def test_a_filter_past_the_cap_is_a_large_selection_for_those_who_may(
    large_staff, make_session, owner
):
    ids = sessions(make_session, owner, 5)
    large = target(large_staff, filter={"status": "active"})
    assert isinstance(large, LargeSelection)
    assert large.spec == {"filter": {"status": "active"}}
    assert sorted(large.rows.values_list("pk", flat=True)) == sorted(ids)


def test_within_the_cap_a_filter_resolves_to_ids_as_today(large_staff, make_session, owner):
    ids = sessions(make_session, owner, 3)
    assert target(large_staff, filter={"status": "active"}) == sorted(ids)


def test_without_the_permission_the_cap_and_its_message_stay(make_user, make_session, owner):
    staff = make_user(staff=True, perms=("bulkops.change_session",))
    sessions(make_session, owner, 5)
    with pytest.raises(ValidationError, match="matches 5 sessions; the cap for close is 3"):
        target(staff, filter={"status": "active"})


def test_id_lists_keep_their_cap_with_the_permission(large_staff, make_session, owner):
    ids = sessions(make_session, owner, 4)
    with pytest.raises(ValidationError, match="At most 3 sessions per operation; got 4"):
        target(large_staff, session_ids=ids)


@on_postgres
def test_export_goes_large_past_its_own_cap(large_staff, make_session, owner):
    sessions(make_session, owner, 4)
    assert isinstance(target(large_staff, action="close", filter={}), LargeSelection)
    assert target(large_staff, action="export", filter={}) != []  # 4 ≤ the export cap
    make_session(owner)
    assert isinstance(target(large_staff, action="export", filter={}), LargeSelection)


@on_postgres
def test_an_all_or_nothing_operation_never_goes_large(large_staff, make_session, owner):
    sessions(make_session, owner, 4)
    with pytest.raises(ValidationError, match="one transaction: at most 3 sessions"):
        target(large_staff, params={"atomic": True}, filter={})


@pytest.mark.skipif(using_postgres(), reason="the SQLite refusal")
def test_on_sqlite_a_large_selection_is_refused_with_a_clear_message(
    large_staff, make_session, owner
):
    sessions(make_session, owner, 4)
    with pytest.raises(ValidationError, match="need PostgreSQL; this server runs on SQLite"):
        target(large_staff, filter={})


def test_selection_resolve_never_goes_large(large_staff, make_session, owner):
    sessions(make_session, owner, 4)
    act = action_build(user=large_staff, action="close", params={})
    with pytest.raises(ValidationError, match="the cap for close is 3"):
        selection_resolve(user=large_staff, action=act, selection=Selection(filter={}))


def test_past_the_large_cap_the_message_has_the_count_and_the_cap():
    large_cap_check(count=6)
    with pytest.raises(
        ValidationError, match="matches 8 sessions; the cap for large operations is 6"
    ):
        large_cap_check(count=8)
    with pytest.raises(ValidationError, match="more than 6 sessions; the cap for large"):
        large_cap_check(count=7)  # counted to the cap + 1: the exact count is not known


@on_postgres
def test_a_large_total_is_one_plain_count_unless_the_planner_expects_more_than_the_limit(
    make_session, owner
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bulkops.engine.large.counts import count_up_to
    from bulkops.models import Session

    sessions(make_session, owner, 8)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE bulkops_session")
    rows = Session.objects.filter(owner=owner)
    with CaptureQueriesContext(connection) as plain:
        assert count_up_to(rows, 100) == 8
    with CaptureQueriesContext(connection) as bounded:
        assert count_up_to(rows, 6) == 7  # the planner expects 8: at most 7 are read
    assert "LIMIT" not in plain.captured_queries[-1]["sql"]  # runs on every core
    assert "LIMIT 7" in bounded.captured_queries[-1]["sql"]
