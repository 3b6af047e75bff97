"""A large operation's chunk statements keep their plan whatever the planner
statistics say (PostgreSQL): its keyset reads walk an index in key order — never
"every row past the cursor, sorted" — and nothing compares every pair. The sessions and
the items a chunk reads were all written since the last ANALYZE, as in production."""

from __future__ import annotations

import json

import pytest
from django.db import connection, transaction

from bulkops import itemstore
from bulkops.actions import get_action
from bulkops.actions.archive import archive_update_sql, compress_rows
from bulkops.engine import Selection, executor, operation_create, operation_undo
from bulkops.engine.large.run import SliceChunks, source_for
from bulkops.engine.large.workers import claim
from bulkops.models import BulkOperation, OperationChunk, Session
from bulkops.selectors import sessions_in_scope_by_id
from bulkops.tests.engine.test_chunk_plans import (
    _explained,
    production_statistics,  # noqa: F401  (a fixture)
    quadratic_loops,
    sessions_not_found_by_key,
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
def test_a_large_archive_chunk_reads_in_key_order_and_each_session_once(staff, owner):
    Session.objects.bulk_create(
        Session(owner=owner, id=f"a-{n:05d}", title="t", content=f"notes {n}") for n in range(SIZE)
    )
    op = operation_create(
        user=staff, action="archive", selection=Selection(filter={"status": "active"})
    ).operation
    statements = first_chunk_plans(op)
    assert_linear(statements)
    # The locking read carries the content: no second read of the chunk's sessions.
    table = f'"{Session._meta.db_table}"'
    reads = [sql for sql, _ in statements if sql.startswith("SELECT") and f"FROM {table}" in sql]
    assert [sql for sql in reads if '"content"' in sql] == [
        sql for sql in reads if "FOR UPDATE" in sql
    ]
    assert len([sql for sql in reads if "FOR UPDATE" in sql]) == 1


@pytest.mark.usefixtures("production_statistics")
def test_the_archive_update_finds_each_locked_row_by_its_tid(owner):
    """The blobs go back in one ``UPDATE … FROM unnest(tids, blobs, …)`` per chunk: each
    row found by a TID scan (or, in a small table, one pass), never a loop over pairs.
    (It is bound server-side, outside Django's cursor: explained here on its own.)"""
    import psycopg
    from django.utils import timezone

    Session.objects.bulk_create(
        Session(owner=owner, id=f"t-{n:05d}", title="t", content=f"notes {n}") for n in range(SIZE)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT ctid::text, id, content FROM "{Session._meta.db_table}" '
            "WHERE owner_id = %s ORDER BY id FOR UPDATE",
            [owner.pk],
        )
        rows = cursor.fetchall()
    _, blobs, osizes, csizes = compress_rows((sid, content) for _, sid, content in rows)
    now = timezone.now()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            f"EXPLAIN (FORMAT JSON) {archive_update_sql(by_tid=True)}",
            ["archived", now, now, [tid for tid, _, _ in rows], blobs, osizes, csizes],
        )
        plan = cursor.fetchone()[0][0]["Plan"]
    assert quadratic_loops(plan) == []
    assert sessions_not_found_by_key(plan) == []


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


# --- an undo's reads of the undone operation's chunks ------------------------------------------
PER_CHUNK = 50
READ = 120


def sid(n: int) -> str:
    return f"u-{n:06d}"


def compact_close(user, chunks: int) -> BulkOperation:
    """A finished large close kept as its run keeps it: ``chunks`` chunk rows of
    ``PER_CHUNK`` sessions each (``u-000000``…, previously ``active`` and ``archived``
    in turn), no items."""
    op = BulkOperation.objects.create(
        user=user, action="close", status="completed", selection={"filter": {}},
        total=chunks * PER_CHUNK, succeeded=chunks * PER_CHUNK,
    )  # fmt: skip
    OperationChunk.objects.bulk_create(
        OperationChunk(
            operation=op,
            first_id=sid(k * PER_CHUNK),
            last_id=sid(k * PER_CHUNK + PER_CHUNK - 1),
            session_ids=[sid(n) for n in range(k * PER_CHUNK, (k + 1) * PER_CHUNK)],
            previous_statuses=[("active", "archived")[n % 2] for n in range(PER_CHUNK)],
            succeeded=PER_CHUNK,
        )
        for k in range(chunks)
    )
    return op


def _analyzed(found: list[dict]):
    """Run each statement under EXPLAIN ANALYZE first, keeping its plan with actuals."""

    def explain(execute, sql, params, many, context):
        raw = context["cursor"].cursor
        raw.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
        plan = raw.fetchone()[0]
        found.append((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
        return execute(sql, params, many, context)

    return explain


def work(call) -> dict[str, int]:
    """What ``call()`` made the database do: its statements, the chunk rows its scans
    read and the array elements it unpacked (``rows_read``)."""
    plans: list[dict] = []
    with connection.execute_wrapper(_analyzed(plans)):
        result = call()
    found = [n for plan in plans for n in nodes(plan)]
    table = OperationChunk._meta.db_table
    return {
        "result": result,
        "statements": len(plans),
        "chunk rows": sum(rows_read(n) for n in found if n.get("Relation Name") == table),
        "unpacked": sum(
            rows_read(n)
            for n in found
            if n["Node Type"] == "Function Scan" and n.get("Function Name") == "unnest"
        ),
    }


def rows_read(node: dict) -> int:
    """The rows a plan node read (returned or filtered out), over all its loops."""
    return (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]


def test_an_undo_reads_a_bounded_range_of_the_undone_chunks_however_many(owner):
    """The next sessions to undo and their previous statuses cost the same whether the
    undone operation has 60 chunk rows or 600, and wherever the cursor stands: a key
    range of chunk rows from the one holding the cursor — never every chunk past it
    sorted, nor every chunk's array once per session (plans the planner took with no
    statistics on freshly written chunk rows: quadratic in the operation's size)."""
    seen = []
    for chunks, at in ((60, 10), (600, 300)):
        op = compact_close(owner, chunks)
        after = at * PER_CHUNK + 5  # the 6th session of chunk ``at``
        read = work(
            lambda op=op, after=after: itemstore.succeeded_after(
                operation_id=op.pk, after=sid(after), through="", size=READ
            )
        )
        ids = read.pop("result")
        assert ids == [sid(n) for n in range(after + 1, after + 1 + READ)]
        previous = work(
            lambda op=op, ids=ids: itemstore.previous_statuses(operation_id=op.pk, ids=ids)
        )
        assert previous.pop("result") == {s: ("active", "archived")[int(s[2:]) % 2] for s in ids}
        seen.append((read, previous))
    assert seen[0] == seen[1]
    (read, previous), _ = seen
    # The sessions read and the chunks around them, not the operation's thousands.
    assert read["unpacked"] <= READ + 2 * PER_CHUNK
    assert previous["unpacked"] <= READ + 2 * PER_CHUNK
    assert previous["chunk rows"] <= 2 + READ // PER_CHUNK + 1
