"""The sessions a bulk action may target by id (``sessions_in_scope_by_id``): a user's
own, or everyone's for staff with the action's permission — the same answer however
often the scope is asked for, while its queryset is built once per shape and copied."""

from __future__ import annotations

import pytest

from bulkops import selectors
from bulkops.actions.close import CloseAction
from bulkops.selectors import scope_shape, sessions_in_scope_by_id

pytestmark = pytest.mark.django_db


def in_scope(user) -> set[str]:
    action = CloseAction(user=user, params={})
    return set(sessions_in_scope_by_id(user=user, action=action).values_list("pk", flat=True))


@pytest.fixture(autouse=True)
def no_kept_scopes(monkeypatch):
    monkeypatch.setattr(selectors, "_scopes", {})


def test_each_user_gets_their_own_sessions_however_often_and_in_whatever_order(
    owner, stranger, make_session
):
    mine = {make_session(owner).pk, make_session(owner).pk}
    theirs = {make_session(stranger).pk}

    for _ in range(2):
        assert in_scope(owner) == mine
        assert in_scope(stranger) == theirs


def test_staff_with_the_permission_get_everyones_sessions(make_user, owner, make_session):
    staff = make_user(staff=True, perms=("bulkops.change_session",))
    owners = make_session(owner).pk
    staffs = make_session(staff).pk

    assert in_scope(staff) == {owners, staffs}
    assert in_scope(owner) == {owners}


def test_each_call_returns_a_copy_that_sees_the_sessions_of_now(owner, make_session):
    action = CloseAction(user=owner, params={})
    first = sessions_in_scope_by_id(user=owner, action=action)
    assert list(first) == []  # evaluated: its result is cached on it
    added = make_session(owner)

    second = sessions_in_scope_by_id(user=owner, action=action)

    assert second is not first
    assert list(second) == [added]
    assert scope_shape(second) == scope_shape(first) == (CloseAction, (), owner.pk)
    [kept] = selectors._scopes.values()
    assert kept._result_cache is None  # the kept queryset itself is never evaluated
