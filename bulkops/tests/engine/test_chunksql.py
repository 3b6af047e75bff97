"""A chunk as one statement (``engine.chunksql``, PostgreSQL): lock in id order, check
and apply in SQL, return the applied ids with the status they had before.

The outcomes must be exactly those of ``check`` (every status, deleted or not), the
succeeded items keep ``previous_status``, ``apply`` is not called, and overlapping
operations over the same rows never deadlock (a stress test with four of them running
at once in their own threads, each on its own connection)."""

from __future__ import annotations

import itertools
import json
import threading

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from bulkops.actions import get_action
from bulkops.actions.base import SessionRow
from bulkops.actions.close import CloseAction
from bulkops.actions.delete import DeleteAction
from bulkops.actions.restore import RestoreAction
from bulkops.engine import Selection, operation_create, operation_execute
from bulkops.engine.chunksql import _statement, sql_plan
from bulkops.models import BulkOperation, BulkOperationItem, Session, SessionStatus
from bulkops.selectors import sessions_in_scope
from bulkops.tests.support.helpers import assert_counters_add_up, execute, outcomes

pytestmark = pytest.mark.postgres  # the one-statement chunk is PostgreSQL's

KINDS = list(itertools.product(SessionStatus.values, (False, True)))


def _no_apply(self, **kwargs):
    raise AssertionError("apply() called: the chunk did not run as one statement")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("action", "params", "cls"),
    [
        ("close", {}, CloseAction),
        ("restore", {}, RestoreAction),
        ("delete", {"soft_delete": True}, DeleteAction),
    ],
)
def test_every_kind_of_session_ends_as_check_says_and_succeeded_items_keep_their_status(
    owner, stranger, make_session, monkeypatch, action, params, cls
):
    monkeypatch.setattr(cls, "apply", _no_apply)
    rows = {}
    for status, deleted in KINDS:
        s = make_session(owner, id=f"{status}-{int(deleted)}", status=status, deleted=deleted)
        rows[s.pk] = SessionRow(s.pk, s.owner_id, s.status, s.deleted_at)
    make_session(stranger, id="theirs")
    act = get_action(action)(user=owner, params=get_action(action).clean_params(params))
    expected = {sid: act.check(row) for sid, row in rows.items()}

    op = execute(owner, action, [*rows, "theirs", "missing"], **params)

    got = outcomes(op)
    assert got.pop("theirs") == got.pop("missing") == ("failed", "not_found")
    for sid, reason in expected.items():
        if reason is None:
            assert got[sid] == ("succeeded", "")
        else:
            assert got[sid] == ("skipped" if reason in act.skip_reasons else "failed", reason)
    previous = dict(
        op.items.filter(outcome="succeeded").values_list("session_id", "previous_status")
    )
    assert previous == {sid: rows[sid].status for sid, r in expected.items() if r is None}
    changed = Session.objects.filter(updated_at__gte=op.started_at)
    assert set(changed.values_list("pk", flat=True)) == set(previous)
    assert_counters_add_up(op)


@pytest.mark.django_db
def test_close_sets_what_apply_would(owner, make_session):
    s = make_session(owner)
    op = execute(owner, "close", [s.pk])
    s.refresh_from_db()
    assert s.status == "closed"
    assert s.closed_at == s.updated_at
    assert op.started_at <= s.closed_at <= op.finished_at


# --- the plan does not depend on estimates -----------------------------------------------
def _joins_of_two_ctes(node: dict) -> list[str]:
    """Join nodes of an EXPLAIN (FORMAT JSON) tree whose two inputs are both CTE scans."""
    found = []
    children = node.get("Plans", [])
    if "Join" in node["Node Type"] or node["Node Type"] == "Nested Loop":
        if len(children) == 2 and all(_only_cte(child) for child in children):
            found.append(node["Node Type"])
    for child in children:
        found += _joins_of_two_ctes(child)
    return found


def _only_cte(node: dict) -> bool:
    if node["Node Type"] == "CTE Scan":
        return True
    return node["Node Type"] in ("Hash", "Materialize", "Sort") and _only_cte(node["Plans"][0])


@pytest.mark.django_db
def test_a_chunk_never_joins_its_locked_rows_to_its_updated_rows(owner, make_session):
    # Each CTE may be estimated at one row (statistics older than the user's sessions):
    # a join between two of them is then a nested loop, 5,000 × 5,000 comparisons per
    # chunk. The statement is written so that no such join exists, whatever the plan.
    ids = sorted(make_session(owner).pk for _ in range(3))
    act = get_action("close")(user=owner, params={})
    with transaction.atomic():
        sql, params = _statement(
            sql_plan(act, timezone.now()),
            sessions_in_scope(user=owner, action=act),
            ids,
            False,
        )
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        transaction.set_rollback(True)
    if isinstance(plan, str):
        plan = json.loads(plan)
    tree = plan[0]["Plan"]
    assert "CTE Scan" in str(tree)  # the plan was read
    assert _joins_of_two_ctes(tree) == []


# --- no deadlock ------------------------------------------------------------------------------
def _run_concurrently(op_ids: list[str]) -> list[BaseException]:
    """``operation_execute`` for each operation at once, one thread (and connection) each."""
    barrier = threading.Barrier(len(op_ids))
    errors: list[BaseException] = []

    def run(op_id: str) -> None:
        try:
            barrier.wait(timeout=30)
            operation_execute(operation_id=op_id)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(op_id,)) for op_id in op_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "an operation hung"
    return errors


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(3))
def test_four_overlapping_operations_in_opposite_orders_never_deadlock(
    owner, make_session, settings, round_
):
    """Four close operations over the same 240 sessions — ascending, descending, odd ids
    then the first half, the second half then even ids; two all-or-nothing (one
    transaction holding every chunk's locks) — run at once in small chunks. Each session
    is closed exactly once (one operation's item succeeds, the others skip it), nothing
    fails (no deadlock, no lock timeout) and every counter adds up."""
    settings.BULKOPS_CHUNK_SIZE = 16
    settings.BULKOPS_LOCK_TIMEOUT = 60
    settings.BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER = 10
    ids = [make_session(owner, id=f"r{round_}-{n:04d}").pk for n in range(240)]
    selections = [
        (ids, False),
        (ids[::-1], True),
        ([i for n, i in enumerate(ids) if n % 2] + ids[:120], False),
        (ids[120:][::-1] + [i for n, i in enumerate(ids) if not n % 2], True),
    ]
    ops = [
        operation_create(
            user=owner,
            action="close",
            selection=Selection(session_ids=list(dict.fromkeys(sel))),
            params={"atomic": atomic},
        ).operation
        for sel, atomic in selections
    ]
    errors = _run_concurrently([op.pk for op in ops])

    assert errors == []
    fresh = [BulkOperation.objects.get(pk=op.pk) for op in ops]
    assert [op.status for op in fresh] == ["completed"] * 4, [op.error for op in fresh]
    assert all(op.failed == 0 for op in fresh)
    for op in fresh:
        assert_counters_add_up(op)
        assert op.processed == op.total
    succeeded = list(
        BulkOperationItem.objects.filter(operation__in=ops, outcome="succeeded").values_list(
            "session_id", flat=True
        )
    )
    assert sorted(succeeded) == sorted(ids)  # each session changed exactly once
    assert sum(op.succeeded for op in fresh) == len(ids)
    assert sum(op.skipped for op in fresh) == sum(op.total for op in fresh) - len(ids)
    assert Session.objects.filter(pk__in=ids, status="closed").count() == len(ids)
    assert Session.objects.filter(pk__in=ids, closed_at__lte=timezone.now()).count() == len(ids)
