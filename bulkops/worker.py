"""The task worker, as ``db_worker`` runs it and as ``serve`` runs it in-process.

On top of django-tasks-db's worker:

- **a reaper**: once when the worker starts and then every ``reap_interval`` seconds on
  a thread, ``operation_reap_stale`` enqueues again the operations whose worker died
  (django-tasks-db has no lease: a SIGKILLed worker leaves its task RUNNING forever);
- **graceful stop**: SIGTERM/SIGINT (or ``WorkerThread.stop``) sets
  ``services.stop_requested``, so the operation in progress finishes its current chunk
  and stops between chunks; the worker then hands it off (enqueues it again, attempt
  given back) for the next worker to resume at once, instead of waiting for the reaper.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from types import FrameType

from django.db import close_old_connections, connections
from django.db.utils import OperationalError
from django.utils.crypto import get_random_string
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult
from django_tasks_db.utils import exclusive_transaction, is_locked_database_exception

from bulkops import services, wakeup
from bulkops.conf import bulkops_settings

logger = logging.getLogger("bulkops.worker")


def default_reap_interval() -> float:
    """A quarter of the staleness window, between 1 and 30 seconds."""
    return min(30.0, max(1.0, bulkops_settings.STALE_AFTER_SECONDS / 4))


def reap_once() -> list[str]:
    """One reaper pass; errors are logged (the worker must keep working)."""
    try:
        return services.operation_reap_stale()
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
    """django-tasks-db's worker, with the reaper and the graceful hand-off."""

    def __init__(self, *, reap_interval: float | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reap_interval = default_reap_interval() if reap_interval is None else reap_interval

    def shutdown(self, signum: int, frame: FrameType | None) -> None:
        # The first signal lets the chunk in progress finish (then the task returns);
        # a second one terminates at once, and the reaper recovers the operation.
        services.stop_requested.set()
        super().shutdown(signum, frame)

    def run(self) -> None:
        reap_once()
        reaper = listener = None
        if not self.batch and self.reap_interval > 0:
            # Not in batch mode: that runs to an empty queue (and in tests, inside the
            # test's transaction, which another connection must not wait on).
            reaper = ReaperThread(interval=self.reap_interval)
            reaper.start()
        if not self.batch:
            listener = wakeup.start_listener()
            if listener is not None:
                listener.listening.wait(5)
        logger.info(
            "worker %s ready (poll every %s s, woken on enqueue%s)",
            self.worker_id,
            self.interval,
            " and by PostgreSQL NOTIFY" if listener is not None else "",
        )
        try:
            self._poll_loop()
        finally:
            for helper in (reaper, listener):
                if helper is not None:
                    helper.stop()

    def _poll_loop(self) -> None:
        """django-tasks-db's ``Worker.run`` loop, except that between polls it waits on
        ``wakeup.task_ready`` (set by an enqueue in this process, or a PostgreSQL
        NOTIFY) instead of sleeping the whole interval."""
        # The library's start line, kept: operators and tests watch for it.
        logging.getLogger("django_tasks_db").info(
            "Starting worker worker_id=%s queues=%s", self.worker_id, ",".join(self.queue_names)
        )
        if self.startup_delay and self.interval:
            time.sleep(random.random())
        while self.running:
            close_old_connections()
            wakeup.task_ready.clear()  # before the poll: a later enqueue wakes the wait
            tasks = DBTaskResult.objects.ready().filter(backend_name=self.backend_name)
            if not self.process_all_queues:
                tasks = tasks.filter(queue_name__in=self.queue_names)
            if self.excluded_queue_names:
                tasks = tasks.exclude(queue_name__in=self.excluded_queue_names)
            retrieved = True
            with exclusive_transaction(tasks.db):
                try:
                    task_result = tasks.get_locked()
                    if task_result is not None:
                        task_result.claim(self.worker_id)
                except OperationalError as exc:
                    if not is_locked_database_exception(exc):
                        raise
                    retrieved, task_result = False, None
            if task_result is not None:
                self.run_task(task_result)
            if self.batch and retrieved and task_result is None:
                return
            if self.max_tasks is not None and self._run_tasks >= self.max_tasks:
                return
            close_old_connections()
            if self.running and task_result is None:
                wakeup.task_ready.wait(self.interval)

    def run_task(self, db_task_result: DBTaskResult) -> None:
        super().run_task(db_task_result)
        if services.stop_requested.is_set():
            operation_id = (db_task_result.args_kwargs.get("kwargs") or {}).get("operation_id")
            if operation_id:
                try:
                    services.operation_hand_off(operation_id=operation_id)
                except Exception:
                    logger.exception(
                        "hand-off of %s failed; the reaper will resume it", operation_id
                    )


def make_worker(
    *,
    interval: float | None = None,
    worker_id: str | None = None,
    reap_interval: float | None = None,
) -> BulkWorker:
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
        self.worker.running = False
        services.stop_requested.set()
        self.join(timeout)
