"""A large operation's chunk statements keep their plan whatever the planner
statistics say (PostgreSQL): its keyset reads walk an index in key order — never
"every row past the cursor, sorted" — and nothing compares every pair. The sessions and
the items a chunk reads were all written since the last ANALYZE, as in production."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from bulkops.actions import get_action
from bulkops.engine import Selection, executor, operation_create, operation_undo
from bulkops.engine.large.run import SliceChunks, source_for
from bulkops.engine.large.workers import claim
from bulkops.models import BulkOperation, Session
from bulkops.selectors import sessions_in_scope_by_id
from bulkops.tests.engine.test_chunk_plans import (
    _explained,
    production_statistics,  # noqa: F401  (a fixture)
    quadratic_loops,
)
from bulkops.tests.support.large import LARGE_PERMS
from bulkops.tests.support.processes import using_postgres

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not using_postgres(), reason="plan shapes are PostgreSQL's (CI runs it)"),
    pytest.mark.django_db,
]

SIZE = 3000


def nodes(plan: dict) -> list[dict]:
    return [plan, *(n for child in plan.get("Plans", []) for n in nodes(child))]


def first_chunk_plans(op: BulkOperation) -> list[tuple[str, object]]:
    """The first chunk of ``op``'s first slice (all its sessions: their ids sort before
    the others', which the slice bounds come from), as a worker that claimed it runs
    it, each statement explained."""
    op, _ = executor._start(op.pk)
    act = get_action(op.action)(user=op.user, params=op.params)
    scope = sessions_in_scope_by_id(user=op.user, action=act)
    piece = claim(op, worker="w")
    assert piece.number == 0
    chunks = SliceChunks(op, act, source_for(op, act, scope), piece, worker="w")
    statements: list[tuple[str, object]] = []
    with connection.execute_wrapper(_explained(statements)), transaction.atomic():
        part = executor._chunk(
            op, None, chunks, size=SIZE, after=chunks.cursor, skip_locked=False, lock=False
        )
    assert part.processed == SIZE
    return statements


def assert_linear(statements, *, unpacks_chunks: bool = False) -> None:
    """No keyset read sorts what it walks, and nothing compares every pair.
    ``unpacks_chunks``: the read of an earlier operation's chunks sorts the ids of the
    chunks it unpacks — only those, found through the chunks' (operation, first_id)
    index — not all the operation's."""
    sorted_reads = [
        (sql, plan)
        for sql, plan in statements
        if " LIMIT " in sql and any(n["Node Type"] == "Sort" for n in nodes(plan[0]["Plan"]))
    ]
    if unpacks_chunks:
        reads = [(sql, plan) for sql, plan in sorted_reads if "bulkops_operationchunk" in sql]
        assert len(reads) == 1
        (_, plan), *_ = reads
        indexes = {n.get("Index Name") for n in nodes(plan[0]["Plan"])}
        assert "chunk_unique_start_per_operation" in indexes, plan
        sorted_reads = [read for read in sorted_reads if read not in reads]
    assert [sql for sql, _ in sorted_reads] == []
    loops = [
        (sql, found) for sql, plan in statements if (found := quadratic_loops(plan[0]["Plan"]))
    ]
    if unpacks_chunks:
        # Unpacking each chunk's own array (a lateral unnest, no join filter) is one pass
        # over its ids, not a comparison of pairs.
        loops = [
            (sql, found)
            for sql, found in loops
            if "bulkops_operationchunk" not in sql or any("None" not in f for f in found)
        ]
    assert loops == []


@pytest.fixture
def staff(make_user, settings):
    settings.BULKOPS_MAX_SESSIONS_PER_OPERATION = 100
    return make_user(staff=True, perms=LARGE_PERMS)


@pytest.mark.usefixtures("production_statistics")
def test_a_filter_chunk_reads_in_key_order(staff, owner):
    Session.objects.bulk_create(
        Session(owner=owner, id=f"f-{n:05d}", title="t") for n in range(SIZE)
    )
    op = operation_create(
        user=staff, action="close", selection=Selection(filter={"status": "active"})
    ).operation
    assert_linear(first_chunk_plans(op))


@pytest.mark.usefixtures("production_statistics")
def test_an_undo_chunk_unpacks_only_the_undone_chunks_it_needs(staff, owner):
    Session.objects.bulk_create(
        Session(owner=owner, id=f"g-{n:05d}", title="t") for n in range(SIZE)
    )
    mine = Selection(filter={"owner": owner.username})
    done = operation_create(user=staff, action="close", selection=mine).operation
    executor.operation_execute(operation_id=done.pk)
    done.refresh_from_db()
    undo = operation_undo(operation=done, user=staff).operation
    assert undo.is_large
    assert_linear(first_chunk_plans(undo), unpacks_chunks=True)
