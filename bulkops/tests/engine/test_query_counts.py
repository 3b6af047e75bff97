"""The engine's fixed cost per operation, pinned as SQL statements (issue 11).

Many small operations per second are bounded by the round trips each one costs, so the
statements of creating and executing a one-session operation are counted (savepoints
left out: the test's own transaction adds them). A change that adds a round trip to
every operation fails here and has to say why; timings belong to the benchmark
(``bulkops_bench --small-ops``)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bulkops.engine import Selection, operation_create, operation_execute
from bulkops.models import Session

pytestmark = pytest.mark.django_db

#: (create, execute) statements of a one-session close, per database. PostgreSQL —
#: create: lock the user's row, count active operations, insert the operation, its
#: items (one INSERT … SELECT unnest), the task, NOTIFY; execute: claim (lock + read
#: with the user, update), one chunk (lock the operation's row reading whether to
#: stop, the pending ids and lock_timeout + synchronous_commit in one statement, the
#: one lock-check-apply statement, the succeeded items, counters), finish (its
#: status, then one UPDATE … RETURNING that reloads it). The succeeded items are their
#: own statement (one per status the sessions had), with the ids as a constant array:
#: written inside the chunk's statement they needed a join that stale statistics plan
#: as a nested loop over every pair (``test_chunk_plans``). No stop check outside the chunk's row lock,
#: no empty chunk, no reload after the commit. SQLite: no NOTIFY, no set_config; the
#: chunk reads the rows, updates the sessions, then the items.
EXPECTED = {"postgresql": (6, 9), "sqlite": (5, 10)}


def _statements(ctx: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in ctx.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"))
    ]


def test_creating_and_executing_a_one_session_operation_costs_a_fixed_number_of_statements(
    owner, make_session
):
    s = make_session(owner)
    with CaptureQueriesContext(connection) as create:
        op = operation_create(
            user=owner, action="close", selection=Selection(session_ids=[s.pk])
        ).operation
    with CaptureQueriesContext(connection) as run:
        operation_execute(operation_id=op.pk)
    assert Session.objects.get(pk=s.pk).status == "closed"
    counts = (len(_statements(create)), len(_statements(run)))
    assert counts == EXPECTED[connection.vendor], "\n".join(
        ["create:", *_statements(create), "execute:", *_statements(run)]
    )
