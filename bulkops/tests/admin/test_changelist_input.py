"""What the changelists make of the query strings people (and attackers) type: the owner
filter takes a user id or a username, as the API's ``owner`` does; a value no user can
have, or a date-hierarchy period no calendar has, is a message — never a 500, and never
a filter silently widened to everyone's rows."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from bulkops.models import BulkOperation, Session

pytestmark = pytest.mark.django_db
SESSIONS = reverse("admin:bulkops_session_changelist")
OPERATIONS = reverse("admin:bulkops_bulkoperation_changelist")
HUGE_NUMBER = "9" * 4400  # past Python's int() digit limit (4,300)


@pytest.fixture
def admin_client(client, make_user):
    client.force_login(make_user("root", superuser=True))
    return client


def seed(owner, prefix: str, count: int = 2) -> None:
    moment = datetime.datetime(2024, 6, 1, tzinfo=datetime.UTC)
    Session.objects.bulk_create(
        Session(id=f"{prefix}-{n}", owner=owner, created_at=moment) for n in range(count)
    )


def listed(response) -> set[str]:
    return {row.pk for row in response.context["cl"].result_list}


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- the owner filter ---------------------------------------------------------------------
def test_the_owner_filter_takes_a_username(admin_client, owner, stranger):
    seed(owner, "o")
    seed(stranger, "t")
    response = admin_client.get(SESSIONS + "?owner=stranger")
    assert listed(response) == {"t-0", "t-1"}
    assert 'value="stranger"' in response.content.decode()


def test_the_owner_filter_takes_a_user_id_as_before(admin_client, owner, stranger):
    seed(owner, "o")
    seed(stranger, "t")
    assert listed(admin_client.get(SESSIONS + f"?owner={owner.pk}")) == {"o-0", "o-1"}
    # The parameter's former name (links and bookmarks) still works.
    assert listed(admin_client.get(SESSIONS + f"?owner__id__exact={owner.pk}")) == {"o-0", "o-1"}


def test_an_owner_no_user_has_lists_nothing_and_says_so(admin_client, owner):
    seed(owner, "o")
    response = admin_client.get(SESSIONS + "?owner=nobody-by-that-name")
    assert response.status_code == 200 and listed(response) == set()
    assert any("No user" in m and "nobody-by-that-name" in m for m in messages_of(response))


@pytest.mark.parametrize("parameter", ["owner", "owner__id__exact"])
def test_an_owner_of_4400_digits_is_a_message_not_a_500(admin_client, owner, parameter):
    seed(owner, "o")
    response = admin_client.get(SESSIONS + f"?{parameter}={HUGE_NUMBER}")
    assert response.status_code == 200
    assert listed(response) == set()  # not widened to everyone's sessions
    assert any("user id or a username" in m for m in messages_of(response))


def test_select_all_under_an_unusable_owner_selects_nothing(admin_client, owner):
    seed(owner, "o")
    response = admin_client.post(
        SESSIONS + f"?owner={HUGE_NUMBER}",
        {"action": "close_sessions", "index": "0", "select_across": "1", "_selected_action": "o-0"},
    )
    assert response.status_code == 302
    assert "No sessions match the filter." in messages_of(response)
    assert not BulkOperation.objects.exists()
    assert set(Session.objects.values_list("status", flat=True)) == {"active"}


def test_select_all_under_a_username_sends_it_as_the_owner_filter(admin_client, owner, stranger):
    seed(owner, "o")
    seed(stranger, "t")
    response = admin_client.post(
        SESSIONS + "?owner=stranger",
        {"action": "close_sessions", "index": "0", "select_across": "1", "_selected_action": "t-0"},
    )
    assert response.context["selection_filter"] == {"deleted": False, "owner": "stranger"}
    assert response.context["result"]["eligible_ids"] == ["t-0", "t-1"]


# --- the date hierarchy -----------------------------------------------------------------------
OUT_OF_RANGE_PERIODS = [
    "created_at__year=9999&created_at__month=12",
    "created_at__year=9999",
    "created_at__year=9999&created_at__month=12&created_at__day=31",
    "created_at__year=0",
    "created_at__year=2024&created_at__month=13",
    "created_at__year=2024&created_at__month=2&created_at__day=30",
    f"created_at__year={HUGE_NUMBER}",
    "created_at__year=-1",
    "created_at__year=twenty",
]


@pytest.mark.parametrize("changelist", [SESSIONS, OPERATIONS])
@pytest.mark.parametrize("period", OUT_OF_RANGE_PERIODS)
def test_a_period_no_calendar_has_is_a_message_not_a_500(admin_client, owner, changelist, period):
    seed(owner, "o")
    response = admin_client.get(f"{changelist}?{period}&q=o", follow=True)
    assert response.status_code == 200
    assert "date" in " ".join(messages_of(response)).lower()
    # The page shown is the changelist without the period (Django's ?e=1).
    assert "created_at__year" not in response.request["QUERY_STRING"]


def test_the_last_valid_period_still_filters(admin_client, owner):
    Session.objects.create(
        id="far", owner=owner, created_at=datetime.datetime(9998, 12, 31, tzinfo=datetime.UTC)
    )
    seed(owner, "o")
    response = admin_client.get(SESSIONS + "?created_at__year=9998&created_at__month=12")
    assert response.status_code == 200 and listed(response) == {"far"}
