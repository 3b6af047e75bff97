"""undo: each kind gives back exactly what its operation took (DESIGN §4 + issue 10), and
a session changed since fails with its reason while nothing else is touched."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from bulkops.actions.archive import decompress_content
from bulkops.engine import operation_undo
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.helpers import assert_counters_add_up, execute, outcomes, run_worker

pytestmark = pytest.mark.django_db

#: Every column an action or its undo may change, except updated_at (which both bump).
STATE = (
    "pk",
    "status",
    "content",
    "deleted_at",
    "closed_at",
    "archived_at",
    "archive_blob",
    "archive_original_size",
    "archive_compressed_size",
)
TEXT = "Première ligne — ünïcödé 🚀\r\n=SUM(A1)?" * 400


def state(*ids: str) -> list[tuple]:
    rows = Session.objects.filter(pk__in=ids).order_by("pk").values_list(*STATE)
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]


def undo(user, op: BulkOperation) -> BulkOperation:
    new = operation_undo(operation=op, user=user).operation
    run_worker()
    new.refresh_from_db()
    return new


def test_undo_of_a_soft_delete_restores_the_sessions(owner, make_session):
    ids = [make_session(owner).pk, make_session(owner, status="closed").pk]
    before = state(*ids)
    op = execute(owner, "delete", ids)
    assert Session.objects.filter(pk__in=ids, deleted_at__isnull=False).count() == 2
    new = undo(owner, op)
    assert (new.action, new.params, new.status) == ("undo", {"undoes": op.pk}, "completed")
    assert outcomes(new) == {sid: ("succeeded", "") for sid in ids}
    assert state(*ids) == before
    assert_counters_add_up(new)


def test_undo_of_a_close_gives_each_session_its_status_back(owner, make_session):
    ids = [make_session(owner).pk, make_session(owner).pk]
    before = state(*ids)
    op = execute(owner, "close", ids)
    assert set(Session.objects.values_list("status", flat=True)) == {"closed"}
    new = undo(owner, op)
    assert new.status == "completed" and new.succeeded == 2
    assert state(*ids) == before  # active again, closed_at cleared


def test_undo_of_an_archive_gives_the_content_back_byte_for_byte(owner, make_session, settings):
    settings.BULKOPS_CHUNK_SIZE = 2  # several chunks, each one UPDATE per batch
    closed_at = timezone.now() - datetime.timedelta(days=1)
    active = [make_session(owner, content=TEXT + str(i)).pk for i in range(3)]
    closed = make_session(owner, status="closed", content="", closed_at=closed_at).pk
    before = state(*active, closed)
    op = execute(owner, "archive", [*active, closed])
    assert Session.objects.get(pk=active[0]).content == ""
    new = undo(owner, op)
    assert new.status == "completed" and new.succeeded == 4
    assert state(*active, closed) == before  # content, status, blob and sizes as before
    for i, sid in enumerate(active):
        assert Session.objects.get(pk=sid).content.encode() == (TEXT + str(i)).encode()
    assert Session.objects.get(pk=closed).status == "closed"


def test_undo_covers_only_the_items_that_succeeded(owner, make_session):
    good = make_session(owner).pk
    already = make_session(owner, status="closed").pk
    processing = make_session(owner, status="processing").pk
    op = execute(owner, "close", [good, already, processing])
    new = undo(owner, op)
    assert outcomes(new) == {good: ("succeeded", "")}
    assert Session.objects.get(pk=already).status == "closed"  # skipped by the close: kept
    assert Session.objects.get(pk=processing).status == "processing"


def test_a_session_closed_again_later_fails_changed_since_and_is_not_touched(owner, make_session):
    again, untouched = make_session(owner).pk, make_session(owner).pk
    bystander = make_session(owner, status="closed", closed_at=timezone.now()).pk
    op = execute(owner, "close", [again, untouched])
    outside = state(bystander)
    Session.objects.filter(pk=again).update(status="active", closed_at=None)
    execute(owner, "close", [again])  # closed again, by a later operation
    later = state(again)
    new = undo(owner, op)
    assert outcomes(new) == {again: ("failed", "changed_since"), untouched: ("succeeded", "")}
    assert new.status == "partial"
    assert state(again) == later
    assert Session.objects.get(pk=untouched).status == "active"
    assert "changed after the operation" in new.items.get(session_id=again).message
    assert state(bystander) == outside  # not in the undone operation: never touched


def test_a_session_hard_deleted_since_fails_not_found(owner, make_session):
    gone, fine = make_session(owner).pk, make_session(owner).pk
    op = execute(owner, "close", [gone, fine])
    Session.objects.filter(pk=gone).delete()
    new = undo(owner, op)
    assert outcomes(new) == {gone: ("failed", "not_found"), fine: ("succeeded", "")}
    assert not Session.objects.filter(pk=gone).exists()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": "processing"}, "processing"),
        ({"deleted_at": timezone.now()}, "deleted"),
        ({"status": "active", "closed_at": None}, "changed_since"),
        ({"status": "archived"}, "changed_since"),
    ],
)
def test_undo_of_a_close_refuses_sessions_changed_since(owner, make_session, change, reason):
    changed, fine = make_session(owner).pk, make_session(owner).pk
    op = execute(owner, "close", [changed, fine])
    Session.objects.filter(pk=changed).update(**change)
    after = state(changed)
    new = undo(owner, op)
    assert outcomes(new) == {changed: ("failed", reason), fine: ("succeeded", "")}
    assert state(changed) == after


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"deleted_at": None}, "changed_since"),  # restored since
        ({"deleted_at": timezone.now() + datetime.timedelta(hours=1)}, "changed_since"),
        ({"status": "processing"}, "processing"),
    ],
)
def test_undo_of_a_soft_delete_refuses_sessions_changed_since(owner, make_session, change, reason):
    changed, fine = make_session(owner).pk, make_session(owner).pk
    op = execute(owner, "delete", [changed, fine])
    Session.objects.filter(pk=changed).update(**change)
    after = state(changed)
    new = undo(owner, op)
    assert outcomes(new) == {changed: ("failed", reason), fine: ("succeeded", "")}
    assert state(changed) == after
    assert Session.objects.get(pk=fine).deleted_at is None


def test_a_session_archived_again_later_keeps_its_new_archive(owner, make_session):
    again, fine = make_session(owner, content="first").pk, make_session(owner, content="x").pk
    op = execute(owner, "archive", [again, fine])
    Session.objects.filter(pk=again).update(
        status="active", content="second", archive_blob=None, archived_at=None
    )
    execute(owner, "archive", [again])
    later = state(again)
    new = undo(owner, op)
    assert outcomes(new) == {again: ("failed", "changed_since"), fine: ("succeeded", "")}
    assert state(again) == later
    blob = Session.objects.get(pk=again).archive_blob
    assert decompress_content(blob) == "second"
    assert Session.objects.get(pk=fine).content == "x"


def test_undo_runs_in_the_undoing_users_scope(owner, stranger, make_session, make_user):
    """Staff who closed others' sessions (with change_session) undo them; the undo needs
    the same permission as the action."""
    staff = make_user("helper", staff=True, perms=("bulkops.change_session",))
    theirs = make_session(stranger).pk
    op = execute(staff, "close", [theirs])
    assert op.succeeded == 1
    new = undo(staff, op)
    assert outcomes(new) == {theirs: ("succeeded", "")}
    assert Session.objects.get(pk=theirs).status == "active"


def test_an_undo_publishes_the_events_of_every_operation(owner, make_session, monkeypatch):
    """started, sessions_updated (status ``undone``) for what it took back, completed —
    each event carrying ``action: "undo"``."""
    from bulkops import events

    seen: list[dict] = []
    ids = [make_session(owner).pk, make_session(owner).pk]
    op = execute(owner, "close", ids)
    monkeypatch.setattr(events, "_send", lambda groups, message: seen.append(message["event"]))
    new = undo(owner, op)
    kinds = [e["type"] for e in seen]
    assert kinds[0] == "bulk_operation_started" and kinds[-1] == "bulk_operation_completed"
    updated = [e for e in seen if e["type"] == "sessions_updated"]
    assert [(e["status"], sorted(e["session_ids"])) for e in updated] == [("undone", sorted(ids))]
    final = seen[-1]
    assert (final["operation_id"], final["action"], final["succeeded"]) == (new.pk, "undo", 2)
