"""The listening side of the wake-up (the enqueue side is ``bulkops.engine.queue``).

django-tasks-db workers poll their queue every ``--interval`` seconds, so a new
operation would wait half an interval on average before anything runs it. Every
enqueue therefore sets ``queue.task_ready`` on commit (for a worker in the same
process) and, on PostgreSQL, sends ``NOTIFY bulkops_tasks`` in the creating transaction,
to which every ``db_worker`` process listens here on a connection of its own.

Polling stays as the safety net: a lost notification costs one interval, nothing more.
"""

from __future__ import annotations

import logging
import threading

from django.db import connection

from bulkops.engine.queue import WAKEUP_CHANNEL, task_ready

logger = logging.getLogger("bulkops.worker")


class Listener(threading.Thread):
    """LISTENs on PostgreSQL for enqueued tasks and sets ``task_ready`` (one connection
    per worker process). Reconnects after errors; the worker keeps polling meanwhile."""

    def __init__(self) -> None:
        super().__init__(name="bulkops-task-listener", daemon=True)
        self.stopped = threading.Event()
        self.listening = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self._listen()
            except Exception:
                logger.warning("task listener lost its connection; retrying", exc_info=True)
                self.listening.clear()
                self.stopped.wait(1.0)

    def _listen(self) -> None:
        # A connection of its own, outside Django's pool: it stays LISTENing for the
        # life of the worker, and must never be handed to a request or a task.
        params = connection.get_connection_params()
        with connection.Database.connect(**params, autocommit=True) as raw:
            raw.execute(f"LISTEN {WAKEUP_CHANNEL}")
            self.listening.set()
            while not self.stopped.is_set():
                for _ in raw.notifies(timeout=1.0, stop_after=1):
                    task_ready.set()

    def stop(self) -> None:
        self.stopped.set()


def start_listener() -> Listener | None:
    """Start a listener when the database can notify (PostgreSQL), else return None."""
    if connection.vendor != "postgresql":
        return None
    listener = Listener()
    listener.start()
    return listener
