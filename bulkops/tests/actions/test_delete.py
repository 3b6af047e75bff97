"""delete: soft (default) and hard, with and without cascade_exports."""

import pytest

from bulkops.models import Session, SessionExport
from bulkops.tests.support.helpers import execute, outcomes

pytestmark = pytest.mark.django_db


def test_soft_delete_sets_deleted_at_and_keeps_row(owner, make_session):
    s = make_session(owner, exports=2)
    op = execute(owner, "delete", [s.pk])
    assert op.status == "completed"
    s.refresh_from_db()
    assert s.deleted_at is not None
    assert SessionExport.objects.filter(session=s).count() == 2  # kept without cascade


def test_soft_delete_with_cascade_removes_exports(owner, make_session):
    s = make_session(owner, exports=2)
    execute(owner, "delete", [s.pk], cascade_exports=True)
    assert Session.objects.get(pk=s.pk).deleted_at is not None
    assert SessionExport.objects.filter(session_id=s.pk).count() == 0


def test_soft_delete_eligibility(owner, stranger, make_session):
    gone = make_session(owner, deleted=True)
    busy = make_session(owner, status="processing")
    theirs = make_session(stranger)
    archived = make_session(owner, status="archived")
    op = execute(owner, "delete", [gone.pk, busy.pk, theirs.pk, archived.pk])
    assert outcomes(op) == {
        gone.pk: ("skipped", "already_deleted"),
        busy.pk: ("failed", "processing"),
        theirs.pk: ("failed", "not_found"),
        archived.pk: ("succeeded", ""),
    }
    assert Session.objects.get(pk=busy.pk).deleted_at is None
    assert Session.objects.get(pk=theirs.pk).deleted_at is None


def test_hard_delete_needs_permission(owner, make_session):
    s = make_session(owner)
    op = execute(owner, "delete", [s.pk], soft_delete=False)
    assert outcomes(op) == {s.pk: ("failed", "permission_denied")}
    assert Session.objects.filter(pk=s.pk).exists()


def test_hard_delete_removes_rows(make_user, make_session):
    user = make_user("hd", perms=("bulkops.hard_delete_session",))
    s, t = make_session(user), make_session(user, deleted=True)
    op = execute(user, "delete", [s.pk, t.pk], soft_delete=False)
    assert op.status == "completed"
    assert not Session.objects.filter(pk__in=[s.pk, t.pk]).exists()


def test_hard_delete_refuses_sessions_with_exports_without_cascade(make_user, make_session):
    user = make_user("hd", perms=("bulkops.hard_delete_session",))
    with_exports, plain = make_session(user, exports=1), make_session(user)
    op = execute(user, "delete", [with_exports.pk, plain.pk], soft_delete=False)
    assert outcomes(op) == {with_exports.pk: ("failed", "has_exports"), plain.pk: ("succeeded", "")}
    assert Session.objects.filter(pk=with_exports.pk).exists()
    assert SessionExport.objects.filter(session_id=with_exports.pk).count() == 1
    assert not Session.objects.filter(pk=plain.pk).exists()


def test_hard_delete_with_cascade_removes_sessions_and_exports(make_user, make_session):
    user = make_user("hd", perms=("bulkops.hard_delete_session",))
    s = make_session(user, exports=3)
    op = execute(user, "delete", [s.pk], soft_delete=False, cascade_exports=True)
    assert op.status == "completed"
    assert not Session.objects.filter(pk=s.pk).exists()
    assert SessionExport.objects.count() == 0


def test_hard_delete_processing_is_refused(make_user, make_session):
    user = make_user("hd", perms=("bulkops.hard_delete_session",))
    s = make_session(user, status="processing")
    op = execute(user, "delete", [s.pk], soft_delete=False)
    assert outcomes(op) == {s.pk: ("failed", "processing")}
    assert Session.objects.filter(pk=s.pk).exists()


def test_staff_needs_delete_permission_for_others(make_user, stranger, make_session):
    theirs = make_session(stranger)
    viewer = make_user("v", staff=True, perms=("bulkops.change_session",))
    assert outcomes(execute(viewer, "delete", [theirs.pk])) == {theirs.pk: ("failed", "not_found")}
    deleter = make_user("d", staff=True, perms=("bulkops.delete_session",))
    assert execute(deleter, "delete", [theirs.pk]).status == "completed"
    assert Session.objects.get(pk=theirs.pk).deleted_at is not None
