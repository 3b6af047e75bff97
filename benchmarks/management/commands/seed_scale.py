"""``manage.py seed_scale --sessions N --owners M``: a table of millions for the
benchmark (``benchmarks.scaleseed``: set-based SQL, owners ``scale-owner-NNNNN``)."""

import time

from django.core.management.base import BaseCommand, CommandError

from benchmarks.scaleseed import seed_scale

MAX_SCALE_SESSIONS = 100_000_000


class Command(BaseCommand):
    help = (
        "Spread --sessions over --owners new owners (scale-owner-NNNNN) with set-based SQL "
        "(generate_series on PostgreSQL): millions in minutes. Use a database of its own."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sessions", type=int, required=True, help="How many sessions.")
        parser.add_argument("--owners", type=int, required=True, help="Over how many owners.")
        parser.add_argument("--years", type=float, default=5.0, help="created_at spread.")

    def handle(self, *args, sessions: int, owners: int, years: float = 5.0, **options):
        if not 1 <= sessions <= MAX_SCALE_SESSIONS:
            raise CommandError(f"--sessions must be between 1 and {MAX_SCALE_SESSIONS:,}.")
        if not 1 <= owners <= sessions:
            raise CommandError("--owners must be between 1 and --sessions.")
        if years <= 0:
            raise CommandError("--years must be positive.")
        started = time.perf_counter()
        prefix = seed_scale(
            sessions=sessions,
            owners=owners,
            years=years,
            progress=lambda done: self.stderr.write(f"  {done:,} / {sessions:,} sessions"),
        )
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"Created {sessions:,} sessions ({prefix}-…) over {owners:,} owners in "
            f"{elapsed:.1f} s ({sessions / max(elapsed, 1e-9):,.0f}/s)."
        )
