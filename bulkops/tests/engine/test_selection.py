"""The one selection filter (``SessionFilterSet``): the API's session list, filter
selections and the admin's "select all" mean the same thing by each key."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from bulkops.actions import get_action
from bulkops.engine import Selection, operation_validate, selection_resolve
from bulkops.models import BulkOperation
from bulkops.tests.support.api import post_json, token_client
from bulkops.tests.support.helpers import run_worker

pytestmark = pytest.mark.django_db

VIEW_AND_CHANGE = ("bulkops.view_session", "bulkops.change_session")


@pytest.fixture
def namesakes(make_user, make_session):
    """``alice`` (pk N) and a user whose *username* is "N": a numeric owner is ambiguous."""
    alice = make_user("alice")
    namesake = make_user(str(alice.pk))
    other = make_user("carol")
    for user, n in ((alice, 2), (namesake, 1), (other, 1)):
        for i in range(n):
            make_session(user, id=f"row_{user.username}_{i}")
    staff = make_user("staff", staff=True, perms=VIEW_AND_CHANGE)
    return alice, namesake, staff


def test_numeric_owner_matches_that_id_or_that_username_in_the_api_list(namesakes):
    alice, namesake, staff = namesakes
    response = token_client(staff).get(f"/api/sessions/?owner={alice.pk}&page_size=100")
    assert response.status_code == 200
    ids = sorted(row["id"] for row in response.json()["results"])
    assert ids == sorted(["row_alice_0", "row_alice_1", f"row_{namesake.username}_0"])


def test_numeric_owner_means_the_same_in_a_filter_selection(namesakes):
    alice, namesake, staff = namesakes
    act = get_action("close")(user=staff, params={"atomic": False})
    for owner in (alice.pk, str(alice.pk)):
        ids = selection_resolve(
            user=staff, action=act, selection=Selection(filter={"owner": owner})
        )
        assert sorted(ids) == sorted(["row_alice_0", "row_alice_1", f"row_{namesake.username}_0"])
    body = post_json(
        token_client(staff),
        "/api/bulk/sessions/validate",
        {"action": "close", "filter": {"owner": alice.pk}},
    ).json()
    assert sorted(body["eligible_ids"]) == sorted(
        ["row_alice_0", "row_alice_1", f"row_{namesake.username}_0"]
    )


def test_admin_select_all_acts_on_exactly_the_rows_its_owner_filter_showed(namesakes, client):
    """The admin's owner filter reads a number as the API does (that id or that
    username), so its "select all" is sent as the filter and acts on exactly the rows
    the list showed: alice's and her namesake's, not carol's."""
    alice, namesake, staff = namesakes
    client.force_login(staff)
    url = f"/admin/bulkops/session/?owner={alice.pk}"
    listed = client.get(url).content.decode()
    assert "row_alice_0" in listed and f"row_{namesake.username}_0" in listed
    assert "row_carol_0" not in listed
    client.post(
        url,
        {
            "action": "close_sessions",
            "select_across": "1",
            "_selected_action": ["row_alice_0"],
            "post": "yes",
            "_bulk_confirm": "1",
        },
    )
    op = BulkOperation.objects.get()
    assert sorted(op.items.values_list("session_id", flat=True)) == sorted(
        ["row_alice_0", "row_alice_1", f"row_{namesake.username}_0"]
    )
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded) == ("completed", 3)


@pytest.mark.parametrize(
    ("filters", "key"),
    [
        ({"status": []}, "filter.status"),
        ({"status": ["active", "nope"]}, "filter.status"),
        ({"owner": ""}, "filter.owner"),
        ({"owner": True}, "filter.owner"),
        ({"deleted": "yes"}, "filter.deleted"),
        ({"created_after": "2024-02-30"}, "filter.created_after"),
        ({"search": "x" * 201}, "filter.search"),
        ({"colour": "red"}, "filter"),
    ],
)
def test_a_filter_value_that_would_widen_or_mislead_is_refused(owner, make_session, filters, key):
    make_session(owner, id="s1")
    with pytest.raises(ValidationError) as caught:
        operation_validate(user=owner, action="close", selection=Selection(filter=filters))
    assert key in caught.value.message_dict


def test_dates_mean_the_same_as_a_date_or_a_date_time(owner, make_session):
    import datetime

    from django.utils import timezone

    old = make_session(owner, id="old")
    new = make_session(owner, id="new")
    type(old).objects.filter(pk=old.pk).update(
        created_at=timezone.now() - datetime.timedelta(days=400)
    )
    cutoff = (timezone.now() - datetime.timedelta(days=1)).date().isoformat()
    for value in (cutoff, f"{cutoff}T00:00:00Z", f"{cutoff}T02:00:00+02:00"):
        result = operation_validate(
            user=owner, action="close", selection=Selection(filter={"created_after": value})
        )
        assert result.as_dict()["eligible_ids"] == [new.pk]


def test_an_over_cap_filter_says_how_many_it_matches_up_to_a_bound(owner, settings):
    """The count in the 400 is exact up to 10× the cap; beyond that "more than N" (a
    bounded count: a filter over millions of rows is never counted)."""
    from bulkops.models import Session

    Session.objects.bulk_create(Session(id=f"b-{n:03d}", owner=owner) for n in range(35))
    for cap, expected in ((5, "matches 35 sessions"), (3, "matches more than 30 sessions")):
        settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = cap
        with pytest.raises(ValidationError) as error:
            operation_validate(
                user=owner, action="close", selection=Selection(filter={"status": "active"})
            )
        assert expected in str(error.value.message_dict["filter"])
