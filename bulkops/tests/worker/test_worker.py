"""The worker: composed on django-tasks-db's public ``Worker`` (not a copy of its loop).

The first tests pin the library behaviour ``BulkWorker`` relies on, so an upgrade that
changes it fails here rather than in production.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time

import pytest
from django.db import OperationalError
from django_tasks_db.management.commands.db_worker import Worker

from bulkops.engine import Selection, operation_create
from bulkops.tests.support.helpers import free_port
from bulkops.tests.support.processes import MANAGE, ROOT
from bulkops.worker import make_worker
from bulkops.worker.worker import DRAIN_MESSAGES

pytestmark = pytest.mark.django_db(transaction=True)


def library_worker(**overrides) -> Worker:
    kwargs = {
        "queue_names": ["default"],
        "interval": 0,
        "batch": True,
        "backend_name": "default",
        "startup_delay": False,
        "max_tasks": None,
        "worker_id": "pin",
        "excluded_queue_names": [],
    }
    return Worker(**(kwargs | overrides))


def test_library_batch_run_returns_on_an_empty_queue_with_the_lines_we_quieten(caplog):
    """BulkWorker drains with the library's own loop in batch mode: it must return once
    the queue is empty, logging the start and exit lines ``QuietDrains`` matches."""
    with caplog.at_level(logging.INFO, logger="django_tasks_db"):
        done = threading.Event()
        thread = threading.Thread(target=lambda: (library_worker().run(), done.set()))
        thread.start()
        thread.join(10)
    assert done.is_set(), "Worker.run(batch=True) did not return on an empty queue"
    messages = [r.msg for r in caplog.records if r.name == "django_tasks_db"]
    assert messages[0] == DRAIN_MESSAGES[0]
    assert any(str(m).startswith(DRAIN_MESSAGES[1]) for m in messages)


def test_library_worker_still_takes_the_arguments_we_pass():
    worker = library_worker(batch=False, startup_delay=True)
    assert (worker.batch, worker.startup_delay, worker.running) == (False, True, True)
    assert callable(worker.run_task) and callable(worker.shutdown)


def refresh_unless_locked(op) -> None:
    """Reload ``op``, or leave it for the next poll when the worker thread is writing:
    in-memory SQLite's shared cache answers "table is locked" at once instead of
    waiting (PostgreSQL and file SQLite wait)."""
    try:
        op.refresh_from_db()
    except OperationalError as exc:
        if "locked" not in str(exc):
            raise


def test_an_idle_worker_logs_its_start_once_and_no_exit_lines(caplog, owner, make_session):
    make_session(owner, id="s1")
    # Created before the worker starts: in-memory SQLite's shared cache refuses (rather
    # than waits for) a second thread during a write.
    op = operation_create(
        user=owner, action="close", selection=Selection(session_ids=["s1"])
    ).operation
    worker = make_worker(interval=0.01, reap_interval=0)
    thread = threading.Thread(target=worker.run)
    with caplog.at_level(logging.INFO, logger="django_tasks_db"):
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not op.is_finished and time.monotonic() < deadline:
                time.sleep(0.05)
                refresh_unless_locked(op)
            time.sleep(0.3)  # then tens of drains of an empty queue
        finally:
            worker.request_stop()
            thread.join(10)
    op.refresh_from_db()  # the worker has stopped: nothing holds the table now
    assert op.status == "completed"
    messages = [str(r.msg) for r in caplog.records if r.name == "django_tasks_db"]
    assert messages.count(DRAIN_MESSAGES[0]) == 1
    assert not [m for m in messages if m.startswith(DRAIN_MESSAGES[1])]


@pytest.mark.processes
def test_a_worker_that_cannot_reach_the_database_keeps_retrying(tmp_path):
    """A real ``db_worker`` pointed at a PostgreSQL port where nothing listens stays up,
    says why and retries with a back-off, instead of exiting after "ready"."""
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/nothing",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REDIS_URL", None)
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*MANAGE, "db_worker", "--no-reload", "--interval", "0.1", "--no-startup-delay"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and log.read_text().count("retrying in") < 3:
                assert proc.poll() is None, f"the worker exited:\n{log.read_text()}"
                time.sleep(0.2)
            assert proc.poll() is None, f"the worker exited:\n{log.read_text()}"
        finally:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert text.count("cannot reach the database") >= 3, text
    delays = [float(line.rsplit("retrying in ", 1)[1].split()[0])
              for line in text.splitlines() if "retrying in" in line]  # fmt: skip
    assert delays[:3] == sorted(delays[:3]) and delays[0] >= 0.5, delays
