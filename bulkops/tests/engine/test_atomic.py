"""All-or-nothing operations (``engine.atomic``, PostgreSQL): a cancel asked for while
the one transaction runs is answered at once, takes effect at the next chunk boundary
inside the transaction and rolls everything back — status ``cancelled``, every item
``cancelled``, no session changed; a pause asked for meanwhile is refused at once.

The run is a real ``operation_execute`` in its own thread and connection; the cancel
comes from this test's connection between two of its chunks, while the transaction
holds every lock it took so far (as a request arriving mid-run would)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from bulkops.engine import (
    Selection,
    atomic,
    operation_cancel,
    operation_create,
    operation_execute,
    operation_pause,
)
from bulkops.exceptions import OperationConflict
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.helpers import assert_counters_add_up, outcomes
from bulkops.tests.support.processes import using_postgres

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.skipif(
        not using_postgres(),
        reason="a cancel from another connection during the transaction: PostgreSQL's",
    ),
]

#: The longest anything here waits for the other thread (never reached when it works).
CEILING = 60


class MidRun:
    """Runs ``operation_execute`` in a thread that stops after its chunk number
    ``after_chunk`` (inside the all-or-nothing transaction) until ``go_on`` is called."""

    def __init__(self, monkeypatch, op_id: str, *, after_chunk: int = 1) -> None:
        self.first_chunk_done = threading.Event()
        self.resume = threading.Event()
        self.errors: list[BaseException] = []
        original = atomic.record_items
        calls = {"n": 0}

        def record_items(op, part):
            original(op, part)
            calls["n"] += 1
            if calls["n"] == after_chunk:
                self.first_chunk_done.set()
                self.resume.wait(CEILING)

        monkeypatch.setattr(atomic, "record_items", record_items)
        self.thread = threading.Thread(target=self._run, args=(op_id,))
        self.thread.start()
        assert self.first_chunk_done.wait(CEILING), "the chunk never ran"

    def _run(self, op_id: str) -> None:
        try:
            operation_execute(operation_id=op_id)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            connections.close_all()

    def go_on(self) -> None:
        self.resume.set()
        self.thread.join(CEILING)
        assert not self.thread.is_alive(), "the operation never finished"
        assert self.errors == []

    def __enter__(self) -> MidRun:
        return self

    def __exit__(self, *exc_info) -> None:
        # Whatever the test found, let the run finish (it holds locks the teardown needs).
        self.resume.set()
        self.thread.join(CEILING)


def _no_waiting(seconds: float = 10) -> None:
    """Fail (lock_timeout) instead of hanging if this connection waits for a lock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, false)", [f"{int(seconds * 1000)}ms"])


@pytest.fixture
def superuser(make_user):
    return make_user("root", superuser=True)


@pytest.mark.parametrize(
    ("action", "params"),
    [("archive", {}), ("close", {}), ("delete", {"soft_delete": False})],
    ids=["archive", "close", "hard-delete"],
)
# After the first chunk of three; after the last (the cancel then comes in before the
# transaction's only write of the operation's row, and still rolls it back).
@pytest.mark.parametrize("after_chunk", [1, 3], ids=["mid-run", "last-chunk"])
def test_cancel_of_a_running_atomic_operation_rolls_everything_back(
    superuser, make_session, settings, monkeypatch, action, params, after_chunk
):
    settings.BULKOPS_CHUNK_SIZE = 2
    settings.BULKOPS_CHUNK_SECONDS = 0  # chunks of exactly 2
    ids = [make_session(superuser, id=f"s{i}", content=f"text {i} " * 50).pk for i in range(6)]
    before = {s.pk: (s.status, s.content, s.deleted_at) for s in Session.objects.all()}
    op = operation_create(
        user=superuser,
        action=action,
        selection=Selection(session_ids=ids),
        params={**params, "atomic": True},
    ).operation
    with MidRun(monkeypatch, op.pk, after_chunk=after_chunk) as run:
        _no_waiting()
        answered = operation_cancel(operation=op)  # not blocked by the running transaction
        assert (answered.status, answered.cancel_requested) == ("running", True)
        again = operation_cancel(operation=op)  # nor is a second cancel
        assert (again.status, again.cancel_requested) == ("running", True)
        with pytest.raises(OperationConflict, match="being cancelled"):
            operation_pause(operation=op)  # nor a pause: refused at once
        run.go_on()

    op.refresh_from_db()
    assert op.status == "cancelled"
    assert op.error.startswith("Cancelled on request.")
    assert "nothing was changed" in op.error
    assert (op.processed, op.cancelled, op.succeeded, op.skipped, op.failed) == (6, 6, 0, 0, 0)
    assert set(outcomes(op).values()) == {("cancelled", "cancelled")}
    assert_counters_add_up(op)
    after = {s.pk: (s.status, s.content, s.deleted_at) for s in Session.objects.all()}
    assert after == before  # the first chunk's changes were rolled back too


def test_a_pause_of_a_running_atomic_operation_is_refused_at_once(
    owner, make_session, settings, monkeypatch
):
    settings.BULKOPS_CHUNK_SIZE = 2
    settings.BULKOPS_CHUNK_SECONDS = 0
    ids = [make_session(owner, id=f"s{i}").pk for i in range(6)]
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=ids), params={"atomic": True}
    ).operation
    with MidRun(monkeypatch, op.pk) as run:
        _no_waiting()
        with pytest.raises(OperationConflict, match="all-or-nothing"):
            operation_pause(operation=op)
        run.go_on()

    op.refresh_from_db()
    assert (op.status, op.succeeded, op.pause_requested) == ("completed", 6, False)
    assert Session.objects.filter(status="closed").count() == 6


def test_an_atomic_operation_shows_no_progress_until_it_commits(
    owner, make_session, settings, monkeypatch
):
    settings.BULKOPS_CHUNK_SIZE = 2
    settings.BULKOPS_CHUNK_SECONDS = 0
    ids = [make_session(owner, id=f"s{i}").pk for i in range(6)]
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=ids), params={"atomic": True}
    ).operation
    with MidRun(monkeypatch, op.pk) as run:
        mid = BulkOperation.objects.get(pk=op.pk)
        assert (mid.status, mid.processed) == ("running", 0)
        assert set(outcomes(mid).values()) == {("pending", "")}
        assert not Session.objects.filter(status="closed").exists()
        run.go_on()

    op.refresh_from_db()
    assert (op.status, op.processed, op.succeeded) == ("completed", 6, 6)
    assert_counters_add_up(op)
