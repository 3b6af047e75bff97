"""An action's SQL eligibility (``sql_apply``) agrees with its ``check(row)``.

On PostgreSQL the engine applies these actions' chunks in one statement whose WHERE is
``sql_apply().eligible``; ``check`` then only explains the rows it left out. So the two
must agree on every row: every status, deleted or not. The condition is run here as
SQL on the test database (SQLite or PostgreSQL) against one session of each kind.
"""

from __future__ import annotations

import itertools

import pytest
from django.db import connection
from django.utils import timezone

from bulkops.actions import get_action
from bulkops.actions.base import SessionRow
from bulkops.models import Session, SessionStatus

pytestmark = pytest.mark.django_db

#: Every action with a one-statement form, with the parameters that give it one.
SQL_ACTIONS = [
    ("close", {}),
    ("restore", {}),
    ("delete", {"soft_delete": True, "cascade_exports": False}),
]
KINDS = list(itertools.product(SessionStatus.values, (False, True)))


def _eligible_in_sql(condition: str, params: tuple) -> set[str]:
    table = connection.ops.quote_name(Session._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT locked.id FROM {table} AS locked WHERE {condition}", params)
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.parametrize(("action", "params"), SQL_ACTIONS, ids=[a for a, _ in SQL_ACTIONS])
def test_the_sql_condition_selects_exactly_the_rows_check_finds_eligible(
    owner, make_session, action, params
):
    for status, deleted in KINDS:
        make_session(owner, id=f"{status}-{'deleted' if deleted else 'live'}", status=status)
        if deleted:
            Session.objects.filter(pk=f"{status}-deleted").update(deleted_at=timezone.now())
    act = get_action(action)(user=owner, params=params)
    plan = act.sql_apply(now=timezone.now())
    by_check = {
        s.pk
        for s in Session.objects.all()
        if act.check(SessionRow(s.pk, s.owner_id, s.status, s.deleted_at)) is None
    }
    assert by_check  # each action has eligible rows among these kinds …
    assert len(by_check) < len(KINDS)  # … and ineligible ones
    assert _eligible_in_sql(plan.eligible, plan.eligible_params) == by_check


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("archive", {}),  # compresses in Python
        ("delete", {"soft_delete": False}),  # has_exports, and rows removed
        ("delete", {"soft_delete": True, "cascade_exports": True}),  # exports go first
        ("export", {"format": "csv"}),  # read-only
    ],
)
def test_actions_that_are_not_one_update_keep_check_and_apply(owner, action, params):
    act = get_action(action)(user=owner, params=get_action(action).clean_params(params))
    assert act.sql_apply(now=timezone.now()) is None
