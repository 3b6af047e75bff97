"""django-tasks-db's ``db_worker``, with bulkops' reaper and graceful hand-off.

``bulkops`` comes before ``django_tasks_db`` in INSTALLED_APPS, so this is the command
``manage.py db_worker`` runs. Options are the library's, plus ``--reap-interval``.
"""

import os
import threading

from django.core.management.base import CommandError
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, run_with_reloader
from django_tasks_db.management.commands.db_worker import Command as DbWorkerCommand
from django_tasks_db.management.commands.db_worker import valid_interval

from bulkops.worker import BulkWorker


class Command(DbWorkerCommand):
    help = (
        "Run a database background worker. It also resumes operations whose worker died "
        "(reaper: at start and every --reap-interval seconds), and on SIGTERM lets the "
        "chunk in progress finish and hands the operation to the next worker."
    )

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--reap-interval",
            type=valid_interval,
            default=None,
            help="Seconds between reaper passes; 0 runs it only at start "
            "(default: BULKOPS_STALE_AFTER_SECONDS / 4, within 1–30).",
        )

    def handle(
        self,
        *,
        verbosity: int,
        queue_name: str,
        interval: float,
        batch: bool,
        backend_name: str,
        startup_delay: bool,
        reload: bool,
        max_tasks: int | None,
        worker_id: str,
        exclude_queues: str,
        reap_interval: float | None = None,
        **options,
    ) -> None:
        # The library's handle builds its Worker inline, so these lines are its handle's,
        # building ours instead (tests/worker pins the options it passes).
        self.configure_logging(verbosity)
        reload = reload and not batch
        queue_names = queue_name.split(",")
        excluded_queue_names = exclude_queues.split(",") if exclude_queues else []
        if excluded_queue_names and "*" not in queue_names:
            raise CommandError("--exclude-queues can only be used with --queue-name=*")
        worker = BulkWorker(
            queue_names=queue_names,
            interval=interval,
            batch=batch,
            backend_name=backend_name,
            startup_delay=startup_delay,
            max_tasks=max_tasks,
            worker_id=worker_id,
            excluded_queue_names=excluded_queue_names,
            reap_interval=reap_interval,
        )
        # Signals can only be handled on the main thread (call_command may run elsewhere).
        on_main_thread = threading.current_thread() is threading.main_thread()
        if reload:
            if os.environ.get(DJANGO_AUTORELOAD_ENV) == "true" and on_main_thread:
                worker.configure_signals()
            run_with_reloader(worker.run)
        else:
            if on_main_thread:
                worker.configure_signals()
            worker.run()
