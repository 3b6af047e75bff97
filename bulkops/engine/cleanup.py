"""Cleanup: what has served its time — expired export files, old operations, finished
task results — removed and counted."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from django.db.models import Q
from django.db.models.fields.json import KT
from django.utils import timezone

from bulkops.actions.undo import UndoAction
from bulkops.conf import bulkops_settings
from bulkops.engine.queue import prune_task_results
from bulkops.exports.storage import remove_files, stale_files
from bulkops.models import FINISHED_OPERATION_STATUSES, BulkOperation

UNDO = UndoAction.action_type


@dataclass
class CleanupResult:
    export_files: int = 0
    operations: int = 0
    task_results: int = 0


def _stale_export_files(*, now: datetime.datetime, old_operations) -> list[Path]:
    expired = BulkOperation.objects.filter(expires_at__lt=now).exclude(export_file="")
    names = (old_operations.exclude(export_file="") | expired).values_list("export_file", flat=True)
    return stale_files(names=names, now=now)


def operations_cleanup(
    *,
    now: datetime.datetime | None = None,
    retention_days: int | None = None,
    task_results_days: int = 1,
    dry_run: bool = False,
) -> CleanupResult:
    """Remove what has served its time and count it:

    - export files past ``expires_at`` (the download answers 410 from then on), and
      ``.part`` files older than a day (an export interrupted for good);
    - finished operations (with their items and export files) finished more than
      ``retention_days`` (default ``BULKOPS_OPERATION_RETENTION_DAYS``) ago — except
      one an undo still kept refers to (it goes with its last undo);
    - finished task results older than ``task_results_days``, with django-tasks-db's
      ``prune_db_task_results`` (queued and running ones are never touched).
    """
    now = now or timezone.now()
    days = bulkops_settings.OPERATION_RETENTION_DAYS if retention_days is None else retention_days
    horizon = now - datetime.timedelta(days=days)
    past = Q(status__in=FINISHED_OPERATION_STATUSES, finished_at__lt=horizon)
    # An undo reads the operation it undoes (to run, to be retried, to be shown): that
    # operation stays while any undo of it stays, and goes in the same run as the last.
    kept_undos = BulkOperation.objects.filter(action=UNDO).exclude(past)
    old = BulkOperation.objects.filter(past).exclude(
        pk__in=kept_undos.annotate(undoes=KT("params__undoes")).values("undoes")
    )
    files = _stale_export_files(now=now, old_operations=old)
    result = CleanupResult(export_files=len(files), operations=old.count())
    result.task_results = prune_task_results(min_age_days=task_results_days, dry_run=dry_run)
    if not dry_run:
        remove_files(files)
        while batch := list(old.values_list("pk", flat=True)[:500]):
            BulkOperation.objects.filter(pk__in=batch).delete()
    return result
