"""Wake idle workers the moment a task is enqueued, instead of at their next poll.

django-tasks-db workers poll their queue every ``--interval`` seconds, so a new
operation waits half an interval on average before anything runs it. Every enqueue
(``django_tasks.signals.task_enqueued``, which fires inside the creating transaction)
therefore also:

- on commit, sets ``task_ready``, which a worker in the same process (``serve``) waits
  on between polls;
- on PostgreSQL, sends ``NOTIFY bulkops_tasks`` in that same transaction — PostgreSQL
  delivers it only if and when the transaction commits — to which every ``db_worker``
  process listens on a connection of its own (``Listener``).

Polling stays as the safety net: a lost notification costs one interval, nothing more.
"""

from __future__ import annotations

import logging
import threading

from django.db import connection, connections, transaction

logger = logging.getLogger("bulkops.worker")

CHANNEL = "bulkops_tasks"

#: Set when a task was committed to the queue; the worker clears it before each poll.
task_ready = threading.Event()


def on_task_enqueued(sender, task_result, **kwargs) -> None:
    """django_tasks ``task_enqueued`` receiver (connected in ``BulkopsConfig.ready``)."""
    transaction.on_commit(task_ready.set)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])


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
                connections.close_all()
                self.stopped.wait(1.0)
        connections.close_all()

    def _listen(self) -> None:
        connection.ensure_connection()
        raw = connection.connection
        raw.autocommit = True
        raw.execute(f"LISTEN {CHANNEL}")
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
