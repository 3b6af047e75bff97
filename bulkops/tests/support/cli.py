"""``manage.py bulk …`` run in this process as a shell runs it: the command line parsed by
the command's own parser, its exit status and its output.

``call_command`` is not quite that: it raises CommandError instead of printing the usage
and exiting 2, and keyword options skip the parser altogether. ``run_bulk`` goes
through ``run_from_argv`` (what ``manage.py`` calls) with one difference: it leaves the
test's database connection open (``run_from_argv`` closes every connection at the end,
which would end the test's transaction).
"""

from __future__ import annotations

import io
import shlex
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from unittest import mock

from django.db import connections

from bulkops.management.commands import bulk as bulk_module
from bulkops.tests.support.helpers import run_worker


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


def run_bulk(line: str, capsys) -> CliResult:
    """Run ``line`` (``bulk …``, as typed in a shell) and return its exit status,
    stdout and stderr (argparse writes its usage to the process's stderr: ``capsys``)."""
    argv = shlex.split(line)
    assert argv[0] == "bulk", line
    out, err = io.StringIO(), io.StringIO()
    command = bulk_module.Command(stdout=out, stderr=err)
    code = 0
    capsys.readouterr()
    with mock.patch.object(connections, "close_all", lambda: None):
        try:
            command.run_from_argv(["manage.py", *argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return CliResult(code, out.getvalue() + captured.out, err.getvalue() + captured.err)


@contextmanager
def while_waiting(step: Callable[[], object]):
    """While ``bulk --wait`` polls, ``step()`` runs in each poll's pause instead of the
    sleep (what another process would do meanwhile: a worker, someone pausing)."""
    clock = SimpleNamespace(monotonic=time.monotonic, sleep=lambda seconds: step())
    with mock.patch.object(bulk_module, "time", clock):
        yield


def worker_while_waiting():
    """While ``bulk --wait`` polls, a real worker runs the queue (in this thread, until
    the queue is empty)."""
    return while_waiting(run_worker)
