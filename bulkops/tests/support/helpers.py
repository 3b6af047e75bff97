"""Helpers for tests: service checks, ports, a real worker run, operation shortcuts."""

from __future__ import annotations

import os
from unittest import mock

import pytest
from django.core.management import call_command

from benchmarks.processes import (  # noqa: F401  (re-exported for the tests)
    free_port,
    port_open,
    redis_available,
)
from bulkops.engine import Selection, operation_create
from bulkops.models import BulkOperation
from bulkops.tests.support.services import in_ci

IN_CI = in_ci()
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def require(available: bool, what: str) -> None:
    """Skip when ``what`` is missing on a developer's machine; fail in CI. For what no
    marker names (a binary, a mount); a marked service's rule is ``support.services``."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} is not available")


def run_worker() -> None:
    """Run the real db_worker in this thread until the queue is empty (``--batch``).

    Three parts of the deployed worker are left out, for the test's transaction's sake;
    each has a test in a real worker process instead:

    - ``close_old_connections()``, which the worker calls around every poll, is a no-op:
      inside a test's transaction it would close the very connection holding the test's
      data (autocommit is off). Real process: ``worker/test_deployed_worker.py`` (a
      connection lost while the worker waits is replaced at its next drain).
    - the reaper thread and the PostgreSQL NOTIFY listener do not start (batch mode
      starts neither: they work on connections of their own, which would not see the
      test's uncommitted rows or would wait on them). Real processes:
      ``worker/test_deployed_worker.py`` (a running worker's reaper thread resumes a dead
      worker's operation) and ``integration/test_wakeup.py`` (a NOTIFY from another
      process wakes ``db_worker``).

    Everything else — claiming, ``run_task``, the executor, events — is the worker as
    deployed.
    """
    with mock.patch(
        "django_tasks_db.management.commands.db_worker.close_old_connections", lambda: None
    ):
        call_command(
            "db_worker", batch=True, startup_delay=False, reload=False, interval=0, verbosity=0
        )


def execute(
    user, action: str, ids: list[str] | None = None, *, filter: dict | None = None, **params
) -> BulkOperation:
    """Create an operation through the service, run the worker, return the fresh row."""
    selection = Selection(session_ids=ids) if filter is None else Selection(filter=filter)
    op = operation_create(user=user, action=action, selection=selection, params=params).operation
    run_worker()
    op.refresh_from_db()
    return op


def outcomes(op: BulkOperation) -> dict[str, tuple[str, str]]:
    """{session_id: (outcome, reason)} for every item of ``op``."""
    return {i.session_id: (i.outcome, i.reason) for i in op.items.all()}


def assert_counters_add_up(op: BulkOperation) -> None:
    assert op.succeeded + op.skipped + op.failed + op.cancelled == op.processed <= op.total
    assert op.items.filter(outcome="succeeded").count() == op.succeeded
    assert op.items.filter(outcome="skipped").count() == op.skipped
    assert op.items.filter(outcome="failed").count() == op.failed
    assert op.items.filter(outcome="cancelled").count() == op.cancelled
