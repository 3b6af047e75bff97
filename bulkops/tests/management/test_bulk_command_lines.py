"""Every ``bulk`` command line README, docs/cli.md and the tests use keeps working: the same
operation, parameters, selection and exit status, whatever the parser looks like inside.

The lines are typed as in a shell and parsed by the command's own parser
(``support.cli.run_bulk``) over the ``sessions`` of ``conftest``; ``{pending}``,
``{paused}`` and ``{done}`` stand for an operation of the user in that state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from bulkops.models import BulkOperation
from bulkops.tests.support.cli import run_bulk, worker_while_waiting

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Line:
    line: str
    #: The operation the line starts, or for pause/resume the operation it names.
    action: str
    total: int
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"
    code: int = 0
    reason: str = ""


LINES = [
    # README: the first command after serve, and the synopsis of every action.
    Line("bulk close --user owner --filter status=active --wait", "close", 3, status="completed"),
    Line("bulk close --user owner --ids a1 a2", "close", 2, {"atomic": False}),
    Line("bulk close --ids a1 a2 --user owner", "close", 2),
    Line("bulk archive --user owner --filter status=active,closed", "archive", 4),
    Line(
        "bulk archive --user owner --filter status=active search=Alpha --atomic",
        "archive",
        3,
        {"atomic": True},
    ),
    Line(
        "bulk delete --user owner --ids a1 a2 --hard --cascade-exports --atomic",
        "delete",
        2,
        {"soft_delete": False, "cascade_exports": True, "atomic": True},
    ),
    Line(
        "bulk delete --user owner --ids a1",
        "delete",
        1,
        {"soft_delete": True, "cascade_exports": False, "atomic": False},
    ),
    Line("bulk restore --user owner --ids d1", "restore", 1),
    Line("bulk restore --user owner --filter status=active", "restore", 1),
    Line(
        "bulk export --user owner --ids a1 c1 --format json --include-details",
        "export",
        2,
        {"format": "json", "include_details": True},
    ),
    Line(
        "bulk export --user owner --filter deleted=false",
        "export",
        4,
        {"format": "csv", "include_details": False},
    ),
    Line(
        "bulk close --user owner --filter owner=owner created_after=2000-01-01 "
        "created_before=2999-01-01",
        "close",
        4,
    ),
    Line(
        "bulk close --user owner --ids a1 --reason 'cli test' --max-failures 0",
        "close",
        1,
        {"max_failures": 0},
        reason="cli test",
    ),
    Line("bulk close --max-failures 0 --user owner --ids a1", "close", 1, {"max_failures": 0}),
    Line("bulk close --user owner --ids a1 --wait --timeout 60", "close", 1, status="completed"),
    # README's tour and docs/cli.md's examples.
    Line("bulk archive --user owner --ids a1 a2 --wait", "archive", 2, status="completed"),
    Line(
        "bulk delete --user owner --ids a1 a2 --cascade-exports",
        "delete",
        2,
        {"soft_delete": True, "cascade_exports": True},
    ),
    Line(
        "bulk export --user owner --filter status=closed,archived --format json --wait",
        "export",
        1,
        {"format": "json"},
        status="completed",
    ),
    # Django's own options may follow the action, as after any command.
    Line("bulk close --user owner --ids a1 --verbosity 0 --skip-checks", "close", 1),
    Line("bulk close --user owner --ids a1 --no-color --traceback", "close", 1),
    # The operation commands.
    Line("bulk pause {pending}", "close", 1, status="paused"),
    Line("bulk pause {pending} --wait", "close", 1, status="paused", code=3),
    Line("bulk resume {paused}", "close", 1, status="pending"),
    Line("bulk resume {paused} --wait", "close", 1, status="completed"),
    Line("bulk undo {done} --user owner", "undo", 2, reason="Undo of {done}"),
    Line(
        "bulk undo {done} --user owner --wait --timeout 60",
        "undo",
        2,
        status="completed",
        reason="Undo of {done}",
    ),
]


@pytest.mark.parametrize("case", LINES, ids=[case.line for case in LINES])
def test_todays_command_line_keeps_working(sessions, name_operations, capsys, case):
    named = name_operations(case.line)
    with worker_while_waiting():
        result = run_bulk(case.line.format(**named), capsys)
    assert result.code == case.code, result
    if named.keys() & {"pending", "paused"}:
        op = BulkOperation.objects.get(pk=next(iter(named.values())))
    else:
        op = BulkOperation.objects.exclude(pk__in=named.values()).get()
        assert (op.source, op.reason) == ("cli", case.reason.format(**named))
    assert (op.action, op.total, op.status) == (case.action, case.total, case.status)
    assert case.params.items() <= op.params.items()
    assert op.pk in result.out
