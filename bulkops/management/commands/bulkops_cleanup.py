"""Remove expired export files, operations past retention and finished task results."""

from django.core.management.base import BaseCommand

from bulkops.engine import operations_cleanup


class Command(BaseCommand):
    help = (
        "Delete expired export files, finished operations older than "
        "BULKOPS_OPERATION_RETENTION_DAYS (with their items and files) and finished task "
        "results; safe to run on a schedule (e.g. hourly cron)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--retention-days",
            type=int,
            default=None,
            help="Keep finished operations this many days "
            "(default: BULKOPS_OPERATION_RETENTION_DAYS).",
        )
        parser.add_argument(
            "--task-results-days",
            type=int,
            default=1,
            help="Keep finished task results this many whole days (default: 1; "
            "django-tasks-db's prune_db_task_results does the pruning).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would go; delete nothing."
        )

    def handle(self, *args, retention_days, task_results_days, dry_run, **options) -> None:
        result = operations_cleanup(
            retention_days=retention_days,
            task_results_days=task_results_days,
            dry_run=dry_run,
        )
        verb = "Would remove" if dry_run else "Removed"
        self.stdout.write(
            f"{verb} {result.export_files} export file(s), {result.operations} "
            f"operation(s), {result.task_results} task result(s)."
        )
