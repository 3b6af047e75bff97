"""close: eligibility (DESIGN §4) and its effect on the database."""

import pytest

from bulkops.models import Session
from bulkops.tests.support.helpers import assert_counters_add_up, execute, outcomes

pytestmark = pytest.mark.django_db(transaction=False)


def test_close_sets_status_and_closed_at(owner, make_session):
    a, b = make_session(owner), make_session(owner)
    op = execute(owner, "close", [a.pk, b.pk])
    assert op.status == "completed"
    assert (op.total, op.processed, op.succeeded) == (2, 2, 2)
    for s in Session.objects.filter(pk__in=[a.pk, b.pk]):
        assert s.status == "closed"
        assert s.closed_at is not None
    assert_counters_add_up(op)


def test_close_skips_already_closed(owner, make_session):
    s = make_session(owner, status="closed")
    op = execute(owner, "close", [s.pk])
    assert op.status == "completed"  # all-skipped is completed
    assert outcomes(op) == {s.pk: ("skipped", "already_closed")}
    assert Session.objects.get(pk=s.pk).closed_at is None  # untouched


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"deleted": True}, "deleted"),
        ({"status": "processing"}, "processing"),
        ({"status": "archived"}, "archived"),
    ],
)
def test_close_fails_ineligible_sessions_with_their_reason(owner, make_session, kwargs, reason):
    bad, good = make_session(owner, **kwargs), make_session(owner)
    op = execute(owner, "close", [bad.pk, good.pk])
    assert op.status == "partial"
    assert outcomes(op) == {bad.pk: ("failed", reason), good.pk: ("succeeded", "")}
    assert Session.objects.get(pk=bad.pk).status == kwargs.get("status", "active")
    assert Session.objects.get(pk=good.pk).status == "closed"
    assert_counters_add_up(op)


def test_close_other_users_session_reports_not_found_and_changes_nothing(
    owner, stranger, make_session
):
    theirs = make_session(stranger)
    op = execute(owner, "close", [theirs.pk, "does-not-exist"])
    assert op.status == "failed"
    assert outcomes(op) == {
        theirs.pk: ("failed", "not_found"),
        "does-not-exist": ("failed", "not_found"),
    }
    assert Session.objects.get(pk=theirs.pk).status == "active"


def test_staff_with_change_permission_closes_anyones_session(make_user, stranger, make_session):
    staff = make_user("boss", staff=True, perms=("bulkops.change_session",))
    theirs = make_session(stranger)
    op = execute(staff, "close", [theirs.pk])
    assert op.status == "completed"
    assert Session.objects.get(pk=theirs.pk).status == "closed"


@pytest.mark.parametrize("kind", ["staff_without_perm", "perm_without_staff"])
def test_permission_alone_or_staff_alone_does_not_reach_others(
    make_user, stranger, make_session, kind
):
    user = (
        make_user("s", staff=True)
        if kind == "staff_without_perm"
        else make_user("p", perms=("bulkops.change_session",))
    )
    theirs = make_session(stranger)
    op = execute(user, "close", [theirs.pk])
    assert outcomes(op) == {theirs.pk: ("failed", "not_found")}
    assert Session.objects.get(pk=theirs.pk).status == "active"


def test_close_atomic_rolls_back_everything_when_one_item_fails(owner, make_session):
    goods = [make_session(owner) for _ in range(3)]
    bad = make_session(owner, status="processing")
    ids = [s.pk for s in goods] + [bad.pk]
    op = execute(owner, "close", ids, atomic=True)
    assert op.status == "failed"
    assert "rolled back" in op.error
    result = outcomes(op)
    assert result[bad.pk] == ("failed", "processing")
    assert all(result[s.pk] == ("failed", "atomic_rollback") for s in goods)
    assert set(Session.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        "active",
        "processing",
    }
    assert Session.objects.filter(pk__in=ids, closed_at__isnull=False).count() == 0
    assert (op.processed, op.failed, op.succeeded) == (4, 4, 0)


def test_close_atomic_applies_all_when_every_item_is_fine(owner, make_session):
    sessions = [make_session(owner) for _ in range(3)] + [make_session(owner, status="closed")]
    op = execute(owner, "close", [s.pk for s in sessions], atomic=True)
    assert op.status == "completed"
    assert (op.succeeded, op.skipped) == (3, 1)
    assert Session.objects.filter(status="closed").count() == 4
