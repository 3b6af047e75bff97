"""The task worker, as ``db_worker`` runs it and as ``serve`` runs it in-process.

Composed on django-tasks-db's public ``Worker`` rather than a copy of its loop: the
library's own ``Worker.run`` in batch mode ("run every queued task, then return") does
all the claiming (``SELECT … FOR UPDATE SKIP LOCKED``) and running; ``BulkWorker.run``
calls it again whenever there may be work, and adds:

- **wake-up**: between drains it waits on ``queue.task_ready`` (set by an enqueue in
  this process, or by a PostgreSQL NOTIFY, ``wakeup.Listener``) for at most
  ``interval`` seconds, instead of sleeping the whole interval;
- **a reaper**: once when the worker starts and then every ``reap_interval`` seconds on
  a thread, ``operation_reap_stale`` enqueues again the operations whose worker died
  (django-tasks-db has no lease: a SIGKILLed worker leaves its task RUNNING forever);
- **graceful stop**: SIGTERM/SIGINT (or ``WorkerThread.stop``) sets this worker's
  ``stopping``, which its tasks ask between chunks (``queue.stop_check``), so the
  operation in progress commits its chunk and stops; the worker then hands it off
  (enqueued again, attempt given back) for the next worker to resume at once;
- **database outages**: an error reaching the database is logged and retried with a
  back-off (up to ``MAX_BACKOFF`` seconds), so a blip does not need a restart.

The library logs a start line and, in batch mode, an exit line on every drain: the start
line is kept to its first occurrence and the exit line dropped (``QuietDrains``).
``tests/worker`` pins the library behaviour this relies on.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from types import FrameType

from django.db import connections
from django.db.utils import InterfaceError, OperationalError
from django.utils.crypto import get_random_string
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult

from bulkops.conf import bulkops_settings
from bulkops.engine import operation_hand_off, operation_reap_stale
from bulkops.engine.queue import operation_id_of, stop_check, task_ready
from bulkops.worker import wakeup

logger = logging.getLogger("bulkops.worker")
library_logger = logging.getLogger("django_tasks_db")

#: Longest wait between attempts to reach a database that is down.
MAX_BACKOFF = 10.0
#: The library's per-drain log lines (``Worker.run``), kept to their first occurrence.
DRAIN_MESSAGES = ("Starting worker worker_id=%s queues=%s", "No more tasks to run for")


class QuietDrains(logging.Filter):
    """While a BulkWorker drains: drops the library's batch-exit line ("No more tasks to
    run … exiting gracefully", which it is not), and its start line after the first."""

    def __init__(self) -> None:
        super().__init__()
        self.state = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(self.state, "draining", False):
            return True
        message = str(record.msg)
        if message.startswith(DRAIN_MESSAGES[1]):
            return False
        if message.startswith(DRAIN_MESSAGES[0]):
            started, self.state.started = getattr(self.state, "started", False), True
            return not started
        return True


quiet_drains = QuietDrains()
library_logger.addFilter(quiet_drains)


def default_reap_interval() -> float:
    """A quarter of the staleness window, between 1 and 30 seconds."""
    return min(30.0, max(1.0, bulkops_settings.STALE_AFTER_SECONDS / 4))


def reap_once() -> list[str]:
    """One reaper pass; errors are logged (the worker must keep working)."""
    try:
        return operation_reap_stale()
    except Exception:
        logger.exception("reaper pass failed")
        return []


class ReaperThread(threading.Thread):
    """Runs ``reap_once`` every ``interval`` seconds until stopped (own DB connection)."""

    def __init__(self, *, interval: float) -> None:
        super().__init__(name="bulkops-reaper", daemon=True)
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                reap_once()
                connections.close_all()
        finally:
            connections.close_all()

    def stop(self) -> None:
        self.stopped.set()


class BulkWorker(Worker):
    """django-tasks-db's worker, with wake-up, the reaper, the graceful hand-off and
    database back-off. Takes the library's arguments, plus ``reap_interval``."""

    def __init__(self, *, reap_interval: float | None = None, **kwargs) -> None:
        #: ``--batch``: run what is queued, then exit (else: serve until stopped).
        self.exit_when_empty = kwargs["batch"]
        self.delay_start = kwargs["startup_delay"]
        super().__init__(**{**kwargs, "batch": True, "startup_delay": False})
        self.reap_interval = default_reap_interval() if reap_interval is None else reap_interval
        self.stopping = threading.Event()
        self.tasks_run = 0

    def shutdown(self, signum: int, frame: FrameType | None) -> None:
        # The first signal lets the chunk in progress finish (then the task returns);
        # a second one terminates at once, and the reaper recovers the operation.
        self.stopping.set()
        super().shutdown(signum, frame)

    def request_stop(self) -> None:
        """Stop after the chunk in progress (the in-process worker's SIGTERM)."""
        self.running = False
        self.stopping.set()
        task_ready.set()

    def run(self) -> None:
        reap_once()
        helpers = self._start_helpers()
        logger.info(
            "worker %s ready (poll every %s s, woken on enqueue%s)",
            self.worker_id,
            self.interval,
            " and by PostgreSQL NOTIFY"
            if any(isinstance(h, wakeup.Listener) for h in helpers)
            else "",
        )
        if self.delay_start and self.interval:
            time.sleep(random.random())  # no thundering herd of workers starting at once
        try:
            self._serve()
        finally:
            quiet_drains.state.draining = quiet_drains.state.started = False
            for helper in helpers:
                helper.stop()

    def _start_helpers(self) -> list:
        if self.exit_when_empty:
            # Batch mode runs to an empty queue (in tests, inside the test's transaction,
            # which another connection must not wait on): no reaper, no listener.
            return []
        helpers: list = []
        if self.reap_interval > 0:
            helpers.append(ReaperThread(interval=self.reap_interval))
            helpers[-1].start()
        listener = wakeup.start_listener()
        if listener is not None:
            listener.listening.wait(5)
            helpers.append(listener)
        return helpers

    def _serve(self) -> None:
        """Drain the queue with the library's loop, then wait to be woken; until stopped,
        or (``--batch``) until the queue is empty, or ``max_tasks`` ran."""
        backoff = 0.0
        quiet_drains.state.draining = True
        while self.running:
            task_ready.clear()  # before the drain: a later enqueue wakes the wait
            try:
                super().run()
                backoff = 0.0
            except (OperationalError, InterfaceError) as exc:
                backoff = min(MAX_BACKOFF, max(0.5, backoff * 2))
                logger.warning(
                    "worker %s cannot reach the database (%s); retrying in %.1f s",
                    self.worker_id,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                    backoff,
                )
                connections.close_all()
            if self.exit_when_empty and not backoff:
                return
            if self.max_tasks is not None and self.tasks_run >= self.max_tasks:
                return
            if self.running:
                task_ready.wait(backoff or self.interval)

    def run_task(self, db_task_result: DBTaskResult) -> None:
        with stop_check(self.stopping.is_set):
            super().run_task(db_task_result)
        self.tasks_run += 1
        if self.stopping.is_set():
            self._hand_off(operation_id_of(db_task_result))

    def _hand_off(self, operation_id: str | None) -> None:
        if not operation_id:
            return
        try:
            operation_hand_off(operation_id=operation_id)
        except Exception:
            logger.exception("hand-off of %s failed; the reaper will resume it", operation_id)


def make_worker(
    *,
    interval: float | None = None,
    worker_id: str | None = None,
    reap_interval: float | None = None,
) -> BulkWorker:
    """A worker for the default queue, as ``serve`` and the benchmark run it."""
    return BulkWorker(
        queue_names=["default"],
        interval=bulkops_settings.WORKER_INTERVAL if interval is None else interval,
        batch=False,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id=worker_id or get_random_string(32),
        excluded_queue_names=[],
        reap_interval=reap_interval,
    )


class WorkerThread(threading.Thread):
    """Runs a worker loop on a thread of the server process (the embedded default)."""

    def __init__(self, *, interval: float | None = None) -> None:
        super().__init__(name="bulkops-worker", daemon=True)
        self.worker = make_worker(interval=interval)

    def run(self) -> None:
        try:
            self.worker.run()
        finally:
            connections.close_all()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the chunk in progress, hand the rest to the next worker, and stop."""
        self.worker.request_stop()
        self.join(timeout)
