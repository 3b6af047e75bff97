"""restore: undo a soft delete."""

import pytest

from bulkops.models import Session
from bulkops.tests.support.helpers import execute, outcomes

pytestmark = pytest.mark.django_db


def test_restore_clears_deleted_at(owner, make_session):
    s = make_session(owner, deleted=True, status="closed")
    op = execute(owner, "restore", [s.pk])
    assert op.status == "completed"
    s.refresh_from_db()
    assert s.deleted_at is None
    assert s.status == "closed"


def test_restore_eligibility(owner, stranger, make_session):
    live = make_session(owner)
    busy = make_session(owner, status="processing", deleted=True)
    theirs = make_session(stranger, deleted=True)
    op = execute(owner, "restore", [live.pk, busy.pk, theirs.pk])
    assert outcomes(op) == {
        live.pk: ("skipped", "not_deleted"),
        busy.pk: ("failed", "processing"),
        theirs.pk: ("failed", "not_found"),
    }
    assert Session.objects.get(pk=busy.pk).deleted_at is not None
    assert Session.objects.get(pk=theirs.pk).deleted_at is not None


def test_restore_by_filter_selects_deleted_sessions(owner, make_session):
    gone = [make_session(owner, deleted=True) for _ in range(3)]
    make_session(owner)
    op = execute(owner, "restore", filter={})
    assert op.total == 3
    assert op.succeeded == 3
    assert Session.objects.filter(pk__in=[s.pk for s in gone], deleted_at__isnull=True).count() == 3
