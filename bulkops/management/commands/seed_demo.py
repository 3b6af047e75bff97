"""Create demo users and sessions, N sessions for one user (benchmarks, trials), or
N sessions over M owners with set-based SQL (``--owners``: tables of millions)."""

import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from bulkops.scaleseed import seed_scale
from bulkops.seeding import seed_demo, seed_sessions

#: --sessions without --owners builds rows in Python; with --owners, set-based SQL.
MAX_PYTHON_SESSIONS = 5_000_000
MAX_SCALE_SESSIONS = 100_000_000


class Command(BaseCommand):
    help = (
        "Without --sessions: create the demo users and their sessions (only when no user "
        "exists). With --sessions N: create N sessions for --user (created if missing)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sessions", type=int, help="How many sessions to create.")
        parser.add_argument("--user", default="demo", help="Owner of the sessions (username).")
        parser.add_argument(
            "--owners",
            type=int,
            help="Spread --sessions over this many new owners (scale-owner-NNNNN) with "
            "set-based SQL (generate_series on PostgreSQL): millions in minutes.",
        )
        parser.add_argument(
            "--years", type=float, default=5.0, help="With --owners: created_at spread."
        )
        parser.add_argument("--content-bytes", type=int, default=2000)
        parser.add_argument(
            "--all-active",
            action="store_true",
            help="Create only active sessions (no mix of states).",
        )

    def handle(
        self, *args, sessions=None, user="demo", content_bytes=2000, all_active=False, **options
    ):
        if options.get("owners") is not None:
            self.seed_scale(sessions, options["owners"], options.get("years", 5.0))
            return
        if sessions is None:
            created = seed_demo(
                credentials_file=settings.BASE_DIR / "var" / "demo_credentials.json"
            )
            if created is None:
                self.stdout.write("Users already exist; demo data not created.")
            else:
                for username, password in created.items():
                    self.stdout.write(f"  {username} / {password}")
            return
        if sessions < 1 or sessions > MAX_PYTHON_SESSIONS:
            raise CommandError(
                f"--sessions must be between 1 and {MAX_PYTHON_SESSIONS:,} (more with --owners)."
            )
        if content_bytes < 0:
            raise CommandError("--content-bytes must not be negative.")
        owner, _ = get_user_model().objects.get_or_create(username=user)
        started = time.perf_counter()
        seed_sessions(
            owner=owner, count=sessions, content_bytes=content_bytes, mixed_states=not all_active
        )
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"Created {sessions} sessions for {user} in {elapsed:.2f} s "
            f"({sessions / max(elapsed, 1e-9):,.0f}/s)."
        )

    def seed_scale(self, sessions: int | None, owners: int, years: float) -> None:
        if sessions is None or not 1 <= sessions <= MAX_SCALE_SESSIONS:
            raise CommandError(f"--owners needs --sessions from 1 to {MAX_SCALE_SESSIONS:,}.")
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
