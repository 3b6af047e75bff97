"""``engine.outcomes``: finishing an operation writes its row once and leaves the
object as the row now is (no reload where the database can return the row)."""

from __future__ import annotations

import pytest
from django.db import connection

from bulkops.engine import Selection, operation_create
from bulkops.engine.outcomes import finalise
from bulkops.models import BulkOperation

pytestmark = pytest.mark.django_db

FIELDS = [f.attname for f in BulkOperation._meta.concrete_fields]


def _row(op: BulkOperation) -> dict:
    fresh = BulkOperation.objects.get(pk=op.pk)
    return {name: getattr(fresh, name) for name in FIELDS}


@pytest.mark.parametrize("returning", [True, False], ids=["update-returning", "update-reload"])
@pytest.mark.parametrize(
    ("counters", "status", "expected"),
    [
        ({"succeeded": 2}, None, "completed"),
        ({"succeeded": 1, "failed": 1}, None, "partial"),
        ({"failed": 2}, None, "failed"),
        ({"succeeded": 2}, "cancelled", "cancelled"),
    ],
)
def test_finalise_leaves_the_object_as_the_row_now_is(
    owner, make_session, monkeypatch, returning, counters, status, expected
):
    monkeypatch.setattr(
        connection.features,
        "can_return_columns_from_insert",
        returning and connection.features.can_return_columns_from_insert,
    )
    ids = [make_session(owner).pk for _ in range(2)]
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=ids)
    ).operation
    BulkOperation.objects.filter(pk=op.pk).update(
        status="running", pause_requested=True, processed=2, **counters
    )
    version = op.version

    finalise(op, status=status, error="why" if status else "")

    assert _row(op) == {name: getattr(op, name) for name in FIELDS}
    assert (op.status, op.pause_requested, op.version) == (expected, False, version + 1)
    assert op.finished_at is not None and op.finished_at == op.heartbeat_at
    assert op.started_at == op.finished_at  # never started: it starts as it ends
    assert op.user.pk == owner.pk
