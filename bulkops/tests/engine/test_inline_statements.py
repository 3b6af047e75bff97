"""What a small operation's inline run costs in statements (PostgreSQL): every round
trip to the database is a share of the request's time, so the count is pinned here
and cannot grow back unnoticed.

Starting a one-session close and running it in the request is, besides the request's
own transaction: the user's lock and the active-operation count; then, under one
savepoint (the fall-back to the queue on a database error), the lock timeout, the
chunk's one statement, the items' insert with their outcomes and the operation's
insert, finished (never a pending row written first and updated after). Run through the worker's path in the same transaction,
as it was before, the same operation took 25: its claim (lock and ``running``
update), a status re-read per chunk and at the end, a savepoint per step, a counters
write and the commit mode set and reset."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bulkops.engine import Selection, operation_create
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.processes import using_postgres

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not using_postgres(), reason="counts PostgreSQL's statements"),
    pytest.mark.django_db,
]

#: The statements of starting and running a one-session close (the first word of
#: each, the table it writes or reads where that tells them apart).
ONE_SESSION_CLOSE = [
    "SAVEPOINT",  # the start's transaction (the request's BEGIN outside a test)
    "UPDATE auth_user",  # the user's lock
    "SELECT COUNT",  # the active-operation cap
    "SAVEPOINT",  # the inline run: rolled back to and queued on a database error
    "SELECT set_config",  # lock_timeout
    "WITH",  # the chunk: lock, check, apply
    "INSERT bulkops_bulkoperationitem",  # the items, each with its outcome
    "INSERT bulkops_bulkoperation",  # counters and final status (not read back)
    "RELEASE",
    "RELEASE",  # the request's COMMIT outside a test
]


def _kind(sql: str) -> str:
    words = sql.replace('"', "").split()
    if words[0] in ("UPDATE", "INSERT"):
        table = words[2] if words[0] == "INSERT" else words[1]
        return f"{words[0]} {table}"
    if words[0] == "SELECT" and words[1].startswith(("COUNT", "set_config")):
        return f"SELECT {words[1].split('(')[0]}"
    return words[0]


@pytest.fixture(autouse=True)
def inline_on(settings):
    settings.BULKOPS_INLINE_MAX_SESSIONS = 20


def test_a_one_session_close_is_started_and_run_in_ten_statements(owner, make_session):
    sid = make_session(owner).pk
    selection = Selection(session_ids=[sid])
    with CaptureQueriesContext(connection) as queries:
        op = operation_create(user=owner, action="close", selection=selection).operation
    assert [_kind(q["sql"]) for q in queries.captured_queries] == ONE_SESSION_CLOSE
    assert (op.status, op.succeeded, op.version) == ("completed", 1, 3)
    assert BulkOperation.objects.get(pk=op.pk).status == "completed"
    assert Session.objects.get(pk=sid).status == "closed"
