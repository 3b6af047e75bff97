"""Create demo users and sessions, or N sessions for one user (trials).

Tables of millions over thousands of owners are the benchmark's: ``manage.py seed_scale``
(the ``benchmarks`` app, docs/benchmarks.md)."""

import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from bulkops.seeding import seed_demo, seed_sessions

#: Rows are built in Python; past this, ``seed_scale`` (set-based SQL) is the tool.
MAX_PYTHON_SESSIONS = 5_000_000


class Command(BaseCommand):
    help = (
        "Without --sessions: create the demo users and their sessions (only when no user "
        "exists). With --sessions N: create N sessions for --user (created if missing)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sessions", type=int, help="How many sessions to create.")
        parser.add_argument("--user", default="demo", help="Owner of the sessions (username).")
        parser.add_argument("--content-bytes", type=int, default=2000)
        parser.add_argument(
            "--all-active",
            action="store_true",
            help="Create only active sessions (no mix of states).",
        )

    def handle(
        self, *args, sessions=None, user="demo", content_bytes=2000, all_active=False, **options
    ):
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
                f"--sessions must be between 1 and {MAX_PYTHON_SESSIONS:,} "
                "(more: seed_scale, docs/benchmarks.md)."
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
