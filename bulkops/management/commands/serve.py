"""One command for the embedded default: migrate, demo data, server and worker together."""

import json
import sys
from pathlib import Path

from daphne.access import AccessLogGenerator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from bulkops.seeding import seed_demo

#: Where the banner's "API:" line leads: the browsable API's login, then the API itself.
API_LANDING = "/api/bulk/sessions/info"


class AccessLog(AccessLogGenerator):
    """daphne's access log — one NCSA-style line per HTTP request and WebSocket event, as
    the ``daphne`` command prints — flushed per line, so a log read while serving (a
    terminal, a file, a test) is current."""

    def write_entry(self, *args, **kwargs) -> None:
        super().write_entry(*args, **kwargs)
        self.stream.flush()


def demo_logins(credentials_file: Path) -> dict[str, str]:
    """The demo logins saved on first run, if they still open this database's accounts
    (the file may belong to another database, or the passwords may have changed)."""
    if not credentials_file.exists():
        return {}
    logins = json.loads(credentials_file.read_text())
    User = get_user_model()
    user = User.objects.filter(username="demo").first()
    if user is None or not user.check_password(logins.get("demo", "")):
        return {}
    return logins


class Command(BaseCommand):
    help = (
        "Run the whole product in one process: migrate, create demo data on first run, "
        "serve HTTP and WebSockets with daphne and run the task worker on a thread."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-demo", action="store_true", help="Do not create demo data.")
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="Do not run the in-process worker (run db_worker instead).",
        )
        parser.add_argument(
            "--no-access-log",
            action="store_true",
            help="Do not print a line per HTTP request and WebSocket connection.",
        )

    def handle(self, *args, host, port, no_demo, no_worker, no_access_log, **options):
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server, twisted_loop

        from bulkops import events
        from bulkops.worker import WorkerThread

        call_command("migrate", interactive=False, verbosity=0)
        if not settings.DEBUG:
            call_command("collectstatic", interactive=False, verbosity=0)
        credentials_file = settings.BASE_DIR / "var" / "demo_credentials.json"
        logins = {}
        if not no_demo:
            seed_demo(credentials_file=credentials_file)
            logins = demo_logins(credentials_file)

        from project.asgi import application

        worker = None if no_worker else WorkerThread()
        base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"

        def ready() -> None:
            # The in-memory channel layer lives on this loop: the worker thread hands
            # its events to it (bulkops.events).
            events.set_server_loop(twisted_loop)
            if worker is not None:
                worker.start()
            self.print_banner(base, logins, worker is not None)

        server = Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            ready_callable=ready,
            action_logger=None if no_access_log else AccessLog(self.stdout),
            verbosity=0,
        )
        try:
            server.run()
        finally:
            if worker is not None:
                worker.stop()
            events.set_server_loop(None)

    def print_banner(self, base: str, logins: dict[str, str], with_worker: bool) -> None:
        ws = base.replace("http", "ws", 1)
        worker_line = "in this process" if with_worker else "not started (run db_worker)"
        lines = [
            "",
            "Bulk operations for sessions is running.",
            f"  Admin:        {base}/admin/",
            f"  API:          {base}/api-auth/login/?next={API_LANDING}",
            "                (log in, then browse; scripts send a token: docs/api.md)",
            f"  API docs:     {base}/api/docs/",
            f"  OpenAPI:      {base}/api/schema/",
            f"  WebSocket:    {ws}/ws/bulk/",
            f"  Worker:       {worker_line}",
        ]
        if logins:
            lines.append("  Demo logins:")
            lines += [f"    {username} / {password}" for username, password in logins.items()]
        lines += ["Press Ctrl+C to stop.", ""]
        self.stdout.write("\n".join(lines))
        sys.stdout.flush()
