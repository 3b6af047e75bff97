"""Resume operations whose worker died (the reaper every worker also runs)."""

from django.core.management.base import BaseCommand

from bulkops.engine import operation_reap_stale


class Command(BaseCommand):
    help = (
        "Enqueue again every running operation whose heartbeat is older than "
        "BULKOPS_STALE_AFTER_SECONDS (and pending ones whose task is gone); a worker "
        "resumes each from its pending items."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--stale-after",
            type=float,
            default=None,
            help="Heartbeat age in seconds (default: BULKOPS_STALE_AFTER_SECONDS).",
        )

    def handle(self, *args, stale_after: float | None, **options) -> None:
        reaped = operation_reap_stale(stale_after=stale_after)
        for operation_id in reaped:
            self.stdout.write(f"Enqueued again: {operation_id}")
        self.stdout.write(f"{len(reaped)} operation(s) enqueued again.")
