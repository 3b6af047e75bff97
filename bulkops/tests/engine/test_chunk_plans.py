"""Every statement of a chunk keeps a plan linear in the chunk's size whatever the
planner statistics say (PostgreSQL).

A deployment that has run many small operations has item statistics that say "a
handful of items per operation"; the items of the operation a chunk runs were written
just before it (no ANALYZE since). A join between the chunk's rows (a CTE, an
``unnest``) and the items is then planned as a nested loop that compares every pair
(a Join Filter, or the chunk rescanned per item): a million comparisons for a
1,000-row chunk. Each statement a chunk runs is captured as it runs and explained with
the same parameters; none may hold such a loop."""

from __future__ import annotations

import json

import pytest
from django.db import connection, transaction

from bulkops.actions import get_action
from bulkops.engine import Selection, executor, operation_create
from bulkops.models import BulkOperation, BulkOperationItem, Session
from bulkops.selectors import sessions_in_scope_by_id
from bulkops.tests.support.processes import using_postgres

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not using_postgres(), reason="plan shapes are PostgreSQL's (CI runs it)"),
    pytest.mark.django_db,
]

#: One-item operations before the ANALYZE: the item statistics of a deployment where
#: people act on a few sessions at a time.
SMALL_OPERATIONS = 3000
#: Nodes that scan the chunk's own rows (a CTE of the statement, an unnest, a VALUES).
CHUNK_SCANS = ("CTE Scan", "Function Scan", "Values Scan")
PASS_THROUGH = ("Materialize", "Hash", "Sort", "Memoize")


SESSION_TABLE = Session._meta.db_table
SESSION_KEY = f"{SESSION_TABLE}_pkey"


def _scans_chunk(node: dict) -> bool:
    while node["Node Type"] in PASS_THROUGH:
        node = node["Plans"][0]
    return node["Node Type"] in CHUNK_SCANS


def quadratic_loops(node: dict) -> list[str]:
    """Nested Loop nodes of an EXPLAIN (FORMAT JSON) tree over the chunk's rows that
    compare every pair: with a Join Filter, or with the chunk's rows as the inner
    side (rescanned once per outer row)."""
    found = []
    children = node.get("Plans", [])
    if node["Node Type"] == "Nested Loop" and any(_scans_chunk(c) for c in children):
        inner = [c for c in children if c.get("Parent Relationship") == "Inner"]
        if "Join Filter" in node or any(_scans_chunk(c) for c in inner):
            found.append(f"Nested Loop (Join Filter: {node.get('Join Filter')})")
    for child in children:
        found += quadratic_loops(child)
    return found


def sessions_not_found_by_key(node: dict) -> list[str]:
    """Index scans of the session table by another index than its primary key: an
    owner's index, say, read in full and filtered by the chunk's ids. (A sequential
    scan is the planner's honest choice for a small table: it knows the table's size
    from its pages, whatever the statistics say about its columns.)"""
    found = []
    kind = node["Node Type"]
    if node.get("Relation Name") == SESSION_TABLE and kind.endswith("Scan") and kind != "Seq Scan":
        index = node.get("Index Name") or next(
            (c.get("Index Name") for c in node.get("Plans", [])), None
        )
        if kind != "Tid Scan" and index != SESSION_KEY:
            found.append(f"{kind} on {SESSION_TABLE} using {index}")
    for child in node.get("Plans", []):
        found += sessions_not_found_by_key(child)
    return found


@pytest.fixture
def production_statistics(owner, make_user):
    """Thousands of one-item operations over other people's sessions, then ANALYZE
    (inside the test's transaction: no autovacuum sees these rows, the statistics are
    exactly these). The owner's sessions come later: a new user's, or new sessions."""
    others = make_user("others")
    Session.objects.bulk_create(
        Session(owner=others, id=f"other-{n:05d}", title="t") for n in range(SMALL_OPERATIONS)
    )
    ops = BulkOperation.objects.bulk_create(
        BulkOperation(user=others, action="close", total=1, status="completed")
        for _ in range(SMALL_OPERATIONS)
    )
    BulkOperationItem.objects.bulk_create(
        BulkOperationItem(operation=op, session_id=f"other-{n:05d}", outcome="succeeded")
        for n, op in enumerate(ops)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"ANALYZE {BulkOperationItem._meta.db_table}, {BulkOperation._meta.db_table}, "
            f"{Session._meta.db_table}"
        )


def _explained(statements: list[tuple[str, object]]):
    def explain(execute, sql, params, many, context):
        head = sql.lstrip().split(None, 1)[0].upper()
        if not many and head in ("SELECT", "UPDATE", "WITH", "INSERT", "DELETE"):
            raw = context["cursor"].cursor
            raw.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = raw.fetchone()[0]
            statements.append((sql, json.loads(plan) if isinstance(plan, str) else plan))
        return execute(sql, params, many, context)

    return explain


def _chunk_plans(owner, action: str, size: int, params: dict) -> list[tuple[str, object]]:
    """Create an operation over ``size`` fresh sessions as the API does (no ANALYZE
    after) and run its first chunk of ``size`` items, explaining each statement."""
    sessions = Session.objects.bulk_create(
        Session(owner=owner, id=f"{action}-{size}-{n:05d}", title="t") for n in range(size)
    )
    op = operation_create(
        user=owner,
        action=action,
        selection=Selection(session_ids=[s.pk for s in sessions]),
        params=params,
    ).operation
    act = get_action(action)(user=owner, params=op.params)
    scope = sessions_in_scope_by_id(user=owner, action=act)
    statements: list[tuple[str, object]] = []
    with connection.execute_wrapper(_explained(statements)), transaction.atomic():
        part = run_one_chunk(op, act, scope, size)
    assert len(part.eligible) == size  # the chunk ran, and took every item
    return statements


def run_one_chunk(op, act, scope, size):
    """A plain operation's chunk as the executor runs it: lock the operation's row and
    read whether to stop, run the chunk, record it."""
    step = executor._PendingItems(op, act, scope)
    return executor._chunk(op, None, step, size=size, after="", skip_locked=False)


@pytest.mark.parametrize("size", [100, 1000, 5000])
@pytest.mark.parametrize(
    ("action", "params"),
    [("close", {}), ("delete", {"soft_delete": True}), ("archive", {})],
)
def test_every_chunk_statement_is_linear_in_the_chunk_with_production_statistics(
    owner, production_statistics, settings, action, params, size
):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = size
    statements = _chunk_plans(owner, action, size, params)
    assert statements
    bad = [
        (sql, found)
        for sql, plan in statements
        if (found := quadratic_loops(plan[0]["Plan"]) + sessions_not_found_by_key(plan[0]["Plan"]))
    ]
    assert bad == [], "\n\n".join(f"{sql}\n→ {found}" for sql, found in bad)
