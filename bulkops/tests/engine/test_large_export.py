"""A large export (PostgreSQL): one slice (it writes one file), every matching session
written once, the file renamed into place when complete."""

from __future__ import annotations

import csv

import pytest

from bulkops.engine import Selection, operation_create
from bulkops.exports.storage import export_path
from bulkops.tests.support.helpers import run_worker
from bulkops.tests.support.large import LARGE_PERMS, seed_sessions
from bulkops.tests.support.processes import using_postgres

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not using_postgres(), reason="large operations need PostgreSQL"),
    pytest.mark.django_db,
]


def test_a_large_export_writes_every_matching_session_once(make_user, owner, settings):
    settings.BULKOPS_MAX_EXPORT_SESSIONS = 100
    seed_sessions(owner, 3000)
    staff = make_user(staff=True, perms=LARGE_PERMS)
    op = operation_create(user=staff, action="export", selection=Selection(filter={})).operation
    assert op.is_large and op.slices.count() == 1
    run_worker()
    op.refresh_from_db()
    assert (op.status, op.succeeded) == ("completed", 3000)
    with open(export_path(op.export_file), newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:3] == ["id", "title", "status"]
    ids = [row[0] for row in rows[1:]]
    assert len(ids) == len(set(ids)) == 3000
