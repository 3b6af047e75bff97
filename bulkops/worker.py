"""The task worker, as ``db_worker`` runs it and as ``serve`` runs it in-process."""

from __future__ import annotations

import threading

from django.utils.crypto import get_random_string
from django_tasks_db.management.commands.db_worker import Worker

from bulkops.conf import bulkops_settings


def make_worker(*, interval: float | None = None, worker_id: str | None = None) -> Worker:
    return Worker(
        queue_names=["default"],
        interval=bulkops_settings.WORKER_INTERVAL if interval is None else interval,
        batch=False,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id=worker_id or get_random_string(32),
        excluded_queue_names=[],
    )


class WorkerThread(threading.Thread):
    """Runs a worker loop on a thread of the server process (the embedded default)."""

    def __init__(self, *, interval: float | None = None) -> None:
        super().__init__(name="bulkops-worker", daemon=True)
        self.worker = make_worker(interval=interval)

    def run(self) -> None:
        from django.db import connections

        try:
            self.worker.run()
        finally:
            connections.close_all()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the chunk in progress, leave the rest to be resumed, and stop."""
        from bulkops.services import stop_requested

        self.worker.running = False
        stop_requested.set()
        self.join(timeout)
