"""The task queue: the only module that imports django_tasks / django_tasks_db.

``run_bulk_operation`` is the task (thin: it calls ``operation_execute``); the rest is
what the engine and its tools need to know about the queue's rows, by name, so no
other module reads django-tasks-db's models or their JSON.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import QuerySet
from django.dispatch import receiver
from django.utils import timezone
from django_tasks import TaskResultStatus, task
from django_tasks.signals import task_enqueued
from django_tasks_db.models import DBTaskResult

from bulkops.engine.executor import operation_execute

#: PostgreSQL NOTIFY channel on which an enqueue wakes every ``db_worker``.
WAKEUP_CHANNEL = "bulkops_tasks"
#: Set when a task was committed to the queue; a worker in this process waits on it.
task_ready = threading.Event()

#: What a task row left RUNNING by a dead worker is marked failed with.
WORKER_LOST = "bulkops.engine.queue.WorkerLost"

_should_stop: ContextVar[Callable[[], bool] | None] = ContextVar(
    "bulkops_should_stop", default=None
)


@contextmanager
def stop_check(should_stop: Callable[[], bool]) -> Iterator[None]:
    """Tasks run inside this block ask ``should_stop`` between chunks (a worker that
    is shutting down answers True: the chunk in progress commits, the rest waits)."""
    token = _should_stop.set(should_stop)
    try:
        yield
    finally:
        _should_stop.reset(token)


@task()
def run_bulk_operation(operation_id: str) -> str | None:
    """Run (or resume) one bulk operation; return its final status."""
    op = operation_execute(operation_id=operation_id, should_stop=_should_stop.get())
    return op.status if op is not None else None


@receiver(task_enqueued, dispatch_uid="bulkops.engine.queue.wake_workers")
def wake_workers(sender, task_result, **kwargs) -> None:
    """Wake idle workers the moment a task is enqueued, not at their next poll: on
    commit ``task_ready`` is set (a worker in this process, ``serve``), and on PostgreSQL
    a ``NOTIFY`` goes out in the same transaction, so it arrives only if it commits
    (every ``db_worker`` listens: ``bulkops.worker.wakeup``)."""
    transaction.on_commit(task_ready.set)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [WAKEUP_CHANNEL])


def enqueue_operation(operation_id: str, *, tasks: int = 1) -> None:
    """Queue the operation's task (in the caller's transaction: it commits with it);
    ``tasks`` of them for a large operation's slices, which run at once."""
    for _ in range(max(1, tasks)):
        run_bulk_operation.enqueue(operation_id=operation_id)


def operation_tasks(operation_id: str) -> QuerySet[DBTaskResult]:
    """The queue's rows for ``run_bulk_operation(operation_id=…)``."""
    return DBTaskResult.objects.filter(
        task_path=run_bulk_operation.module_path,
        args_kwargs__kwargs__operation_id=operation_id,
    )


def delete_operation_tasks(operation_ids: Iterable[str]) -> int:
    """Remove the queue's rows of these operations; return how many went."""
    deleted, _ = DBTaskResult.objects.filter(
        task_path=run_bulk_operation.module_path,
        args_kwargs__kwargs__operation_id__in=list(operation_ids),
    ).delete()
    return deleted


def operation_id_of(task_result: DBTaskResult) -> str | None:
    """The operation a queue row runs, or None for another task."""
    if task_result.task_path != run_bulk_operation.module_path:
        return None
    return (task_result.args_kwargs.get("kwargs") or {}).get("operation_id")


def task_alive(operation_id: str, *, claimed_since: datetime.datetime) -> bool:
    """Whether a task for the operation is queued, or was claimed since ``claimed_since``."""
    tasks = operation_tasks(operation_id)
    if tasks.filter(status=TaskResultStatus.READY).exists():
        return True
    return tasks.filter(status=TaskResultStatus.RUNNING, started_at__gte=claimed_since).exists()


def mark_lost(operation_id: str, *, now: datetime.datetime, note: str) -> int:
    """Mark the operation's RUNNING task rows failed (django-tasks-db has no lease: a
    SIGKILLed worker's row stays RUNNING forever); return how many."""
    return (
        operation_tasks(operation_id)
        .filter(status=TaskResultStatus.RUNNING)
        .update(
            status=TaskResultStatus.FAILED,
            finished_at=now,
            exception_class_path=WORKER_LOST,
            traceback=note,
        )
    )


def queue_stats(*, now: datetime.datetime | None = None) -> dict[str, float | int | None]:
    """What a health check or a metrics scrape wants of the queue: tasks waiting, the
    age of the oldest one, and the age of the last one a worker finished (seconds)."""
    now = now or timezone.now()
    ready = DBTaskResult.objects.ready()
    oldest = ready.order_by("enqueued_at").values_list("enqueued_at", flat=True).first()
    last = (
        DBTaskResult.objects.finished()
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)
        .first()
    )
    return {
        "ready": ready.count(),
        "oldest_ready_age_seconds": _age(now, oldest),
        "last_finished_age_seconds": _age(now, last),
    }


def _age(now: datetime.datetime, moment: datetime.datetime | None) -> float | None:
    return None if moment is None else round((now - moment).total_seconds(), 3)


def prune_task_results(*, min_age_days: int, dry_run: bool = False) -> int:
    """Remove finished task rows older than ``min_age_days`` with django-tasks-db's own
    ``prune_db_task_results`` (every queue); queued and running rows are never touched
    (the reaper reads them). Return how many were (or, dry run, would be) removed."""
    horizon = timezone.now() - datetime.timedelta(days=min_age_days)
    count = DBTaskResult.objects.finished().filter(finished_at__lte=horizon).count()
    call_command(
        "prune_db_task_results",
        min_age_days=min_age_days,
        queue_name="*",
        dry_run=dry_run,
        verbosity=0,
    )
    return count
