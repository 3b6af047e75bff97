"""``bulk undo <operation id>`` and the completion report ``bulk --wait`` points to."""

import io

import pytest
from django.core.management import CommandError, call_command

import bulkops.management.commands.bulk as bulk_module
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.cli import worker_while_waiting
from bulkops.tests.support.helpers import execute, run_worker

pytestmark = pytest.mark.django_db


def test_bulk_undo_starts_an_undo_the_worker_runs(owner, make_session):
    ids = [make_session(owner).pk for _ in range(2)]
    op = execute(owner, "close", ids)
    out = io.StringIO()
    call_command("bulk", "undo", op.pk, user="owner", stdout=out)
    new = BulkOperation.objects.get(action="undo")
    assert (new.source, new.total, new.params) == ("cli", 2, {"undoes": op.pk})
    assert f"Operation {new.pk}: undo of 2 sessions (pending)." in out.getvalue()
    run_worker()
    assert set(Session.objects.values_list("status", flat=True)) == {"active"}


def test_bulk_wait_prints_failures_by_reason_and_the_report_url(owner, make_session):
    ok = make_session(owner).pk
    busy = [make_session(owner, status="processing").pk for _ in range(2)]
    with worker_while_waiting():
        out = io.StringIO()
        with pytest.raises(SystemExit) as exit_info:
            call_command(
                "bulk", "close", user="owner", ids=[ok, *busy, "nope"], wait=True, stdout=out
            )
    assert exit_info.value.code == bulk_module.EXIT_STATUS["partial"]
    op = BulkOperation.objects.get()
    text = out.getvalue()
    assert "  failed processing: 2\n  failed not_found: 1\n" in text
    assert f"Report: GET /api/bulk/operations/{op.pk}/report?format=csv" in text


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (["undo"], {"user": "owner"}, "the following arguments are required: OPERATION_ID"),
        (["undo", "op-" + "0" * 32], {"user": "owner"}, "No such operation"),
        (["undo", "op-x"], {"user": "owner", "ids": ["a"]}, "unrecognized arguments: --ids"),
        (
            ["close", "op-" + "0" * 32],
            {"user": "owner", "ids": ["a"]},
            "unrecognized arguments: op-0",
        ),
        (["close"], {"user": "owner"}, "one of the arguments --ids --filter is required"),
    ],
)
def test_bulk_undo_bad_input_is_a_clear_error(owner, args, kwargs, message):
    with pytest.raises(CommandError, match=message):
        call_command("bulk", *args, stdout=io.StringIO(), **kwargs)
    assert not BulkOperation.objects.exists()


def test_bulk_undo_of_someone_elses_operation_is_not_found(owner, stranger, make_session):
    theirs = execute(stranger, "close", [make_session(stranger).pk])
    with pytest.raises(CommandError, match="No such operation"):
        call_command("bulk", "undo", theirs.pk, user="owner", stdout=io.StringIO())
    assert BulkOperation.objects.count() == 1


def test_bulk_undo_refusal_is_a_clear_error(owner, make_session):
    op = execute(owner, "export", [make_session(owner).pk], format="json")
    with pytest.raises(CommandError, match="cannot be undone"):
        call_command("bulk", "undo", op.pk, user="owner", stdout=io.StringIO())
    assert BulkOperation.objects.count() == 1
