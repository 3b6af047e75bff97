"""Lock contention (issue 12): a long transaction holding some sessions' rows delays an
operation by at most ``BULKOPS_LOCK_TIMEOUT``; those sessions then fail ``locked`` (a
retry can take them later) and the rest are applied. PostgreSQL only: SQLite has no
row locks (it serialises writers)."""

from __future__ import annotations

import pytest
from django.db import connection

from bulkops.models import Session
from bulkops.tests.support.helpers import execute, outcomes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


@pytest.fixture
def holder():
    """Another connection, in a transaction that holds row locks until closed."""
    import psycopg

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    conn = psycopg.connect(**params)
    yield conn
    conn.rollback()
    conn.close()


def hold(conn, ids: list[str]) -> None:
    conn.execute("SELECT id FROM bulkops_session WHERE id = ANY(%s) FOR UPDATE", [ids])


@pytest.mark.parametrize("atomic", [False, True])
def test_rows_held_past_the_lock_timeout_fail_locked(owner, make_session, settings, holder, atomic):
    settings.BULKOPS_LOCK_TIMEOUT = 0.3
    ids = [make_session(owner, id=f"s{i}").pk for i in range(5)]
    hold(holder, ["s1", "s3"])
    op = execute(owner, "close", ids, atomic=atomic)
    holder.rollback()
    got = outcomes(op)
    assert got["s1"] == got["s3"] == ("failed", "locked")
    if atomic:  # all or nothing: the locked ones fail the whole operation
        assert op.status == "failed"
        assert {got[s] for s in ("s0", "s2", "s4")} == {("failed", "atomic_rollback")}
        assert not Session.objects.filter(status="closed").exists()
    else:
        assert op.status == "partial"
        assert {got[s] for s in ("s0", "s2", "s4")} == {("succeeded", "")}
        assert set(Session.objects.filter(status="closed").values_list("pk", flat=True)) == {
            "s0",
            "s2",
            "s4",
        }


def test_a_lock_released_in_time_is_simply_waited_for(owner, make_session, settings, holder):
    import threading

    settings.BULKOPS_LOCK_TIMEOUT = 30
    ids = [make_session(owner, id=f"s{i}").pk for i in range(3)]
    hold(holder, ["s1"])
    threading.Timer(0.5, holder.rollback).start()
    op = execute(owner, "close", ids)
    assert (op.status, op.succeeded) == ("completed", 3)
