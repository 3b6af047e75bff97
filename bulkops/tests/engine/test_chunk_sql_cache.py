"""The chunk statement's lock query is compiled once per shape (``engine.chunksql``):
the action and its parameters, the owner the scope is limited to, ``skip_locked`` and
the form of the ids; a later chunk of the same shape reuses its SQL with its own ids.
Any other scope (a filtered one: a large operation's) is compiled every time."""

from __future__ import annotations

import pytest

from bulkops.actions.close import CloseAction
from bulkops.engine import chunksql
from bulkops.models import Session, SessionStatus
from bulkops.selectors import scope_shape, sessions_in_scope_by_id
from bulkops.tests.support.helpers import execute, outcomes

pytestmark = pytest.mark.django_db


@pytest.fixture
def compiles(monkeypatch):
    """The lock queries compiled from here on (each as the ids it was compiled with)."""
    monkeypatch.setattr(chunksql, "_compiled", {})
    compiled: list[list[str]] = []
    original = chunksql._lock_query

    def counting(scope, ids, skip_locked):
        compiled.append(list(ids))
        return original(scope, ids, skip_locked)

    monkeypatch.setattr(chunksql, "_lock_query", counting)
    return compiled


def _scope(user, **params):
    return sessions_in_scope_by_id(user=user, action=CloseAction(user=user, params=params))


@pytest.mark.postgres
def test_the_second_chunk_of_a_shape_compiles_nothing_and_gets_its_own_ids(owner, compiles):
    first_sql, _ = chunksql.lock_sql(_scope(owner), ["s-1", "s-2"], False)
    sql, params = chunksql.lock_sql(_scope(owner), ["s-3"], False)

    assert len(compiles) == 1  # the first call's, with placeholder ids
    assert sql == first_sql
    expected_sql, expected = chunksql._lock_query(
        _scope(owner), ["s-3"], False
    ).query.sql_with_params()
    assert (sql, params) == (expected_sql, list(expected))


@pytest.mark.postgres
def test_each_owner_skip_locked_and_id_form_is_a_shape_of_its_own(owner, stranger, compiles):
    for user, ids, skip_locked in [
        (owner, ["a"], False),
        (stranger, ["a"], False),
        (owner, ["a"], True),
        (owner, ["not plain"], False),
        (owner, ["b"], False),  # the first shape again
    ]:
        sql, params = chunksql.lock_sql(_scope(user), ids, skip_locked)
        expected_sql, expected = chunksql._lock_query(
            _scope(user), ids, skip_locked
        ).query.sql_with_params()
        assert (sql, params) == (expected_sql, list(expected))
    assert len(compiles) == 4 + 5  # four shapes, and the five expected queries


def test_a_filtered_scope_has_no_shape_and_is_compiled_every_time(owner, compiles):
    scope = _scope(owner).filter(status=SessionStatus.ACTIVE)
    assert scope_shape(scope) is None
    chunksql.lock_sql(scope, ["a"], False)
    chunksql.lock_sql(scope, ["b"], False)
    assert compiles == [["a"], ["b"]]


def test_staff_acting_on_everyones_sessions_is_no_owners_shape(make_user, owner):
    boss = make_user("boss", staff=True, perms=("bulkops.change_session",))
    assert scope_shape(_scope(boss))[-1] is None
    assert scope_shape(_scope(owner))[-1] == owner.pk


@pytest.mark.postgres
def test_operations_of_two_owners_after_each_other_act_on_their_own_sessions_only(
    owner, stranger, make_session, compiles
):
    mine = [make_session(owner, status=SessionStatus.ACTIVE).pk for _ in range(2)]
    theirs = [make_session(stranger, status=SessionStatus.ACTIVE).pk for _ in range(2)]

    first = execute(owner, "close", [mine[0], theirs[0]])
    second = execute(stranger, "close", [mine[1], theirs[1]])
    third = execute(owner, "close", [mine[1], theirs[1]])

    assert outcomes(first) == {mine[0]: ("succeeded", ""), theirs[0]: ("failed", "not_found")}
    assert outcomes(second) == {theirs[1]: ("succeeded", ""), mine[1]: ("failed", "not_found")}
    assert outcomes(third) == {mine[1]: ("succeeded", ""), theirs[1]: ("failed", "not_found")}
    closed = set(Session.objects.filter(status=SessionStatus.CLOSED).values_list("pk", flat=True))
    assert closed == {mine[0], mine[1], theirs[1]}
    assert len(compiles) == 2  # one per owner: the third reused the first's
