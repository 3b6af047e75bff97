"""The ``bulk`` command: ``--max-failures``, ``bulk pause|resume <operation id>``, and
``--wait`` on an operation that gets paused (issue 10 §4)."""

import io

import pytest
from django.core.management import CommandError, call_command

import bulkops.management.commands.bulk as bulk_module
from bulkops.engine import Selection, operation_create, operation_pause
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.cli import while_waiting
from bulkops.tests.support.helpers import outcomes, run_worker

pytestmark = pytest.mark.django_db


def bulk(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command("bulk", *args, stdout=out, **kwargs)
    return out.getvalue()


def test_max_failures_is_passed_on_and_stops_the_operation(owner, make_session, settings):
    settings.BULKOPS_CHUNK_SIZE = 1
    ok = make_session(owner, id="b-ok").pk
    bulk("close", "--max-failures", "0", user="owner", ids=["a-missing", ok])
    op = BulkOperation.objects.get()
    assert op.params["max_failures"] == 0
    run_worker()
    op.refresh_from_db()
    assert op.status == "failed"
    assert outcomes(op)[ok] == ("cancelled", "failure_threshold")
    assert Session.objects.get(pk=ok).status == "active"


@pytest.mark.parametrize("bad", ["-1", "x", "1.5", "10000000"])
def test_bad_max_failures_is_a_clear_error_and_creates_nothing(owner, make_session, bad):
    sid = make_session(owner).pk
    with pytest.raises(CommandError, match="max-failures: Must be an integer from 0"):
        bulk("close", "--max-failures", bad, user="owner", ids=[sid])
    assert not BulkOperation.objects.exists()


def test_bulk_pause_and_resume_an_operation(owner, make_session):
    sid = make_session(owner).pk
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=[sid])
    ).operation
    assert f"Operation {op.pk}: paused." in bulk("pause", op.pk)
    op.refresh_from_db()
    assert op.status == "paused"
    assert f"Operation {op.pk}: pending." in bulk("resume", op.pk)
    run_worker()
    op.refresh_from_db()
    assert op.status == "completed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pause"], "the following arguments are required: OPERATION_ID"),
        (["resume", "op-" + "0" * 32], "needs an existing operation id"),
        (["close", "op-123", "--user", "owner", "--ids", "a"], "unrecognized arguments: op-123"),
    ],
)
def test_bulk_pause_resume_bad_input_is_a_clear_error(owner, args, message):
    with pytest.raises(CommandError, match=message):
        bulk(*args)


def test_bulk_resume_of_an_operation_that_is_not_paused_is_refused(owner, make_session):
    sid = make_session(owner).pk
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=[sid])
    ).operation
    with pytest.raises(CommandError, match="Only a paused operation can be resumed"):
        bulk("resume", op.pk)
    op.refresh_from_db()
    assert op.status == "pending"


def test_wait_stops_watching_a_paused_operation_and_says_how_to_resume(owner, make_session):
    ids = [make_session(owner).pk for _ in range(2)]
    out = io.StringIO()
    # Someone pauses it from the admin while the command waits.
    with while_waiting(lambda: operation_pause(operation=BulkOperation.objects.get())):
        with pytest.raises(SystemExit) as exit_info:
            call_command("bulk", "close", user="owner", ids=ids, wait=True, stdout=out)
    assert exit_info.value.code == bulk_module.EXIT_PAUSED
    op = BulkOperation.objects.get()
    assert f"Paused. Resume it with: manage.py bulk resume {op.pk}" in out.getvalue()
    assert "paused: 0 succeeded" in out.getvalue()
