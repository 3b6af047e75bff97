"""A large operation on two real workers (PostgreSQL): its slices run at once, one
worker per slice; one worker is SIGKILLed mid-slice, and its slice is taken over from
its cursor once its claim goes stale — every session acted on exactly once."""

from __future__ import annotations

import pytest

from bulkops.tests.support.processes import using_postgres, using_redis, wait_until

pytestmark = [
    pytest.mark.processes,
    pytest.mark.postgres,
    pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL"),
]

SIZE = 100_000
SETUP = """
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from bulkops.tests.support.large import LARGE_PERMS, seed_sessions
owner = get_user_model().objects.create_user("alice", password="pw-integration-1")
staff = get_user_model().objects.create_user("boss", password="pw-integration-1", is_staff=True)
for perm in LARGE_PERMS:
    app, codename = perm.split(".")
    staff.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
seed_sessions(owner, %d)
"""
CREATE = """
from django.contrib.auth import get_user_model
from bulkops.engine import Selection, operation_create
op = operation_create(
    user=get_user_model().objects.get(username="boss"), action="close",
    selection=Selection(filter={"status": "active"}),
).operation
print(op.pk)
"""


def claims(db, op_id: str) -> list[tuple[str, int]]:
    return db.query(
        "SELECT claimed_by, number FROM bulkops_operationslice WHERE operation_id = %s "
        "AND claimed_by <> '' ORDER BY number",
        op_id,
    )


def test_slices_run_on_two_workers_and_a_killed_workers_slice_resumes_once(world):
    db, procs = world(
        postgres=True,
        redis=using_redis(),
        BULKOPS_STALE_AFTER_SECONDS="3",
        BULKOPS_CHUNK_SECONDS="0",
        BULKOPS_CHUNK_SIZE="2000",
    )
    procs.run("migrate", "--no-input", "-v", "0")
    procs.run("shell", "-c", SETUP % SIZE)
    victim, _ = procs.worker("worker-victim"), procs.worker("worker-survivor")
    op_id = procs.run("shell", "-c", CREATE).strip().splitlines()[-1]
    slices = "SELECT count(*) FROM bulkops_operationslice WHERE operation_id = %s"
    assert db.scalar(slices, op_id) == 4

    wait_until(lambda: len({w for w, _ in claims(db, op_id)}) == 2, "both workers to hold a slice")
    wait_until(lambda: db.operation(op_id)["processed"] >= 20_000, "the run to be well under way")
    procs.kill(victim)
    at_kill = db.operation(op_id)
    assert at_kill["status"] == "running" and at_kill["processed"] < 70_000, at_kill

    finished = lambda: db.operation(op_id)["status"] != "running"  # noqa: E731
    wait_until(finished, "the survivor to finish", timeout=600)
    op = db.operation(op_id)
    assert (op["status"], op["processed"], op["succeeded"]) == ("completed", 70_000, 70_000), op
    # Every session once: the chunks' arrays hold 70,000 distinct ids, and no item is
    # kept for a succeeded session.
    acted = db.query(
        "SELECT count(*), count(DISTINCT sid) FROM bulkops_operationchunk AS c "
        "CROSS JOIN LATERAL unnest(c.session_ids) AS sid WHERE c.operation_id = %s",
        op_id,
    )
    assert acted == [(70_000, 70_000)]
    items = "SELECT count(*) FROM bulkops_bulkoperationitem WHERE operation_id = %s"
    assert db.scalar(items, op_id) == 0
    assert db.scalar("SELECT count(*) FROM bulkops_session WHERE status = 'active'") == 0
    assert db.scalar(slices + " AND NOT done", op_id) == 0
    print(
        f"\n[large] killed at {at_kill['processed']}/70000; the survivor finished; "
        f"attempts {op['attempts']}"
    )
