"""The worker interface: django-tasks-db's worker with bulkops' wake-up, reaper,
graceful hand-off and database back-off (the task itself is ``bulkops.engine.queue``)."""

from bulkops.worker.worker import BulkWorker, WorkerThread, make_worker, reap_once

__all__ = ["BulkWorker", "WorkerThread", "make_worker", "reap_once"]
