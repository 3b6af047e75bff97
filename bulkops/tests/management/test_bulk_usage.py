"""The ``bulk`` command refuses what it cannot do, and ``--wait`` says how it ended.

A wrong command line exits 2 with argparse's usage of the subcommand and a message
naming the problem; a refusal (no such user or operation, bad ids, a state that does
not allow it) exits 1 with the service's message. Neither changes anything. With
``--wait`` the exit status is the operation's ending (``EXIT_STATUS``).
"""

from __future__ import annotations

import pytest

from bulkops.actions import selectable_actions
from bulkops.engine import operation_cancel
from bulkops.management.commands import bulk as bulk_module
from bulkops.models import BulkOperation, Session
from bulkops.tests.support.api import snapshot
from bulkops.tests.support.cli import (
    CliResult,
    run_bulk,
    while_waiting,
    worker_while_waiting,
)

pytestmark = pytest.mark.django_db

WRONG_LINES = {
    "bulk": "the following arguments are required: COMMAND",
    "bulk explode --user owner --ids a1": "invalid choice: 'explode'",
    "bulk close --ids a1": "the following arguments are required: --user",
    "bulk close --user owner": "one of the arguments --ids --filter is required",
    "bulk close --user owner --ids a1 --filter status=active": "not allowed with argument",
    "bulk close --user owner --ids a1 --hard": "unrecognized arguments: --hard",
    "bulk close --user owner --ids a1 --format json": "unrecognized arguments: --format json",
    "bulk export --user owner --ids a1 --format xml": "invalid choice: 'xml'",
    "bulk close --user owner --ids a1 --max-failures -1": "Must be an integer from 0 to",
    "bulk close --user owner --ids a1 --max-failures 1.5": "Must be an integer from 0 to",
    "bulk close --user owner --filter colour=red": "Unknown filter keys: colour",
    "bulk close --user owner --filter status": "Each filter is key=value",
    "bulk close --user owner --filter status=gone": "--filter: Must be one of active",
    "bulk close --user owner --filter deleted=maybe": "--filter: Must be true or false",
    "bulk close --user owner --filter created_after=yesterday": "ISO 8601",
    "bulk close op-123 --user owner --ids a1": "unrecognized arguments: op-123",
    "bulk close --user owner --ids a1 --wait --timeout soon": "invalid float value: 'soon'",
    "bulk pause": "the following arguments are required: OPERATION_ID",
    "bulk pause {pending} --user owner": "unrecognized arguments: --user owner",
    "bulk resume {paused} --reason why": "unrecognized arguments: --reason why",
    "bulk undo {done}": "the following arguments are required: --user",
    "bulk undo {done} --user owner --ids a1": "unrecognized arguments: --ids a1",
}

REFUSED_LINES = {
    "bulk close --user nobody --ids a1": "No user named 'nobody'",
    "bulk close --user owner --ids ../x": "session_ids: Malformed session ids",
    "bulk close --user owner --ids a1 a1": "session_ids: Duplicate session ids: a1",
    "bulk close --user owner --filter search=Nothing-like-it": "filter: No sessions match the filter",
    "bulk resume {pending}": "Only a paused operation can be resumed",
    "bulk resume op-0000": "bulk resume needs an existing operation id",
    "bulk undo op-0000 --user owner": "No such operation",
}


COMMANDS = [*selectable_actions(), "pause", "resume", "undo"]


def state() -> tuple:
    """Every session column an action could change, and every operation's state."""
    operations = BulkOperation.objects.order_by("pk").values_list("pk", "status", "version")
    return snapshot(), list(operations)


@pytest.fixture
def run_changing_nothing(sessions, name_operations, capsys):
    """``run_changing_nothing(line)``: run it (naming its operations) and assert that no
    session and no operation changed."""

    def run(line: str) -> CliResult:
        named = name_operations(line)
        before = state()
        result = run_bulk(line.format(**named), capsys)
        assert state() == before, result
        return result

    return run


@pytest.mark.parametrize("line", WRONG_LINES)
def test_a_wrong_command_line_exits_2_with_the_usage_and_changes_nothing(
    run_changing_nothing, line
):
    result = run_changing_nothing(line)
    assert result.code == 2, result
    command = line.split()[1] if line != "bulk" else ""
    usage = f"usage: manage.py bulk {command}" if command in COMMANDS else "usage: manage.py bulk"
    assert usage in result.err  # the usage of the subcommand the line names
    assert WRONG_LINES[line] in result.err


@pytest.mark.parametrize("line", REFUSED_LINES)
def test_a_refused_command_exits_1_with_the_reason_and_changes_nothing(run_changing_nothing, line):
    result = run_changing_nothing(line)
    assert result.code == 1, result
    assert f"CommandError: {REFUSED_LINES[line]}" in result.err


def test_every_ending_of_wait_has_its_own_exit_status():
    # 1: refused, 2: a wrong command line (as every command); completed is 0.
    codes = [1, 2, *bulk_module.EXIT_STATUS.values(), bulk_module.EXIT_STILL_RUNNING]
    assert len(set(codes)) == len(codes)
    assert set(bulk_module.EXIT_STATUS) == {
        "completed",
        "partial",
        "failed",
        "cancelled",
        "paused",
    }


@pytest.mark.parametrize(
    ("line", "status", "code"),
    [
        ("bulk archive --user owner --ids a1 a2 --wait", "completed", 0),
        ("bulk archive --user owner --ids a1 busy --wait", "partial", 4),
        ("bulk archive --user owner --ids busy --wait", "failed", 5),
    ],
)
def test_wait_exits_with_the_status_of_how_the_operation_ended(
    owner, sessions, make_session, capsys, line, status, code
):
    make_session(owner, id="busy", status="processing")
    with worker_while_waiting():
        result = run_bulk(line, capsys)
    op = BulkOperation.objects.get()
    assert (op.status, result.code) == (status, code), result
    assert f"{status}: " in result.out


def test_wait_on_an_operation_cancelled_meanwhile_exits_6(sessions, capsys):
    # Someone cancels it from the admin while the command waits.
    with while_waiting(lambda: operation_cancel(operation=BulkOperation.objects.get())):
        result = run_bulk("bulk close --user owner --ids a1 --wait", capsys)
    assert (BulkOperation.objects.get().status, result.code) == ("cancelled", 6), result
    assert Session.objects.get(pk="a1").status == "active"


def test_wait_that_runs_out_of_time_exits_7_and_leaves_the_operation_running(sessions, capsys):
    result = run_bulk("bulk close --user owner --ids a1 --wait --timeout 0", capsys)
    op = BulkOperation.objects.get()
    assert (op.status, result.code) == ("pending", 7), result
    assert f"Gave up waiting after 0 s; {op.pk} is pending." in result.err


def test_an_inverted_flag_says_what_it_does_not_what_its_parameter_is(capsys):
    """``--hard`` sets ``soft_delete`` to false: its help is not the parameter's label."""
    result = run_bulk("bulk delete --help", capsys)
    assert result.code == 0
    hard = result.out[result.out.index("--hard  ") :].split("\n  --")[0]
    assert "Hard delete: remove the rows" in " ".join(hard.split())
    assert "Soft delete (set deleted_at)" not in result.out
    for action in selectable_actions().values():
        for param in action.params_spec.values():
            if param.is_bool and param.default:
                assert param.cli_help, f"{action.action_type}: a default-true flag needs cli_help"


def test_help_lists_every_action_and_operation_command_and_the_exit_statuses(capsys):
    result = run_bulk("bulk --help", capsys)
    assert result.code == 0
    for command in COMMANDS:
        assert f"    {command} " in result.out
    text = " ".join(result.out.split())
    assert "0 completed, 3 paused, 4 partial, 5 failed, 6 cancelled" in text
