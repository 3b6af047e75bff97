"""``bulkops_bench --large 1m --large-workers 2``: the large figures with real processes —
one daphne server and N ``db_worker`` processes (``DEBUG=0``) on the bench's own
PostgreSQL database and Redis, everything asked through the API over HTTP with the
bench user's token, as a client would:

1. the bystander alone for a few seconds (its baseline);
2. validate of a close of every live active session (time, answer size), the raw
   ``UPDATE`` of the same rows (in this process, rolled back: the reference), the POST
   (no token), then the run on the workers while the bystander lists its sessions;
3. the sessions of the archive's filter (live active ones in the oldest half of the
   seed's span) given 2 KB contents, validate, the POST with validate's token, the run
   with the bystander;
4. a CSV (gzip) export of every live session (rows/s, file size and lines).

Run times are the operation's own ``started_at → finished_at``; "end to end" is its
``created_at → finished_at`` (queue and pickup included). After each operation the
seed is put back (``table.restore``) and vacuumed, so the next one — and the next run —
meet the table as seeded. Whatever happens (an error, Ctrl-C, SIGTERM) the operations
still running are cancelled, the processes ended, the seed put back and the bystander
removed.
"""

from __future__ import annotations

import gzip
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.db import connection

from benchmarks.large.bystander import Bystander, bystander_for
from benchmarks.large.table import (
    CLOSE_FILTER,
    archive_filter,
    bench_user,
    bystander_create,
    bystander_remove,
    ensure_table,
    foreign_sessions,
    prepare_archive,
    raw_update,
    restore,
    timed,
    vacuum,
)
from benchmarks.load.report import load_average
from benchmarks.processes import (
    ProcessError,
    Processes,
    current_env,
    healthy,
    production_env,
    sigterm_as_interrupt,
)
from benchmarks.report import machine_facts, rounded
from benchmarks.scenarios import CONTENT_BYTES
from bulkops.actions import get_action
from bulkops.conf import bulkops_settings
from bulkops.models import ACTIVE_OPERATION_STATUSES, FINISHED_OPERATION_STATUSES, BulkOperation

BYSTANDER_SESSIONS = 300
#: Seconds the bystander runs alone first.
IDLE_SECONDS = 5.0
#: The bound on one operation's run: this, plus RUN_SECONDS_PER_SESSION per session seeded.
RUN_TIMEOUT = 300.0
RUN_SECONDS_PER_SESSION = 1 / 500
#: Seconds the workers get to stop an operation cancelled at teardown.
CANCEL_WAIT = 30.0
POLL = 0.2
HTTP_TIMEOUT = 120.0


def database_url() -> str:
    """The URL of this process's database connection (the test database in a test)."""
    s = connection.settings_dict
    user = quote(s.get("USER") or "", safe="")
    password = quote(s.get("PASSWORD") or "", safe="")
    auth = f"{user}{':' + password if password else ''}@" if user else ""
    return f"postgres://{auth}{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


class Fleet:
    """daphne and ``workers`` × ``db_worker`` on this database, with this process's caps."""

    def __init__(self, workdir: Path, workers: int) -> None:
        self.workers = workers
        self.exports = workdir / "exports"
        env = current_env(
            **production_env(workdir),
            DATABASE_URL=database_url(),
            BULKOPS_EXPORT_DIR=str(self.exports),
            BULKOPS_MAX_SESSIONS_PER_OPERATION=str(bulkops_settings.MAX_SESSIONS_PER_OPERATION),
            BULKOPS_MAX_EXPORT_SESSIONS=str(bulkops_settings.MAX_EXPORT_SESSIONS),
        )
        self.procs = Processes(workdir, env)
        self.base = ""
        #: Every process started (``procs.running`` is emptied once they are stopped).
        self.started: list = []

    def start(self) -> None:
        self.procs.run("collectstatic", "--no-input", "-v", "0")  # DEBUG=0 needs them
        for n in range(self.workers):
            self.procs.worker(f"worker-{n + 1}", interval=None)
        self.base = self.procs.server("daphne", ready=healthy)
        self.started = [proc for _, proc in self.procs.running]


class Api:
    """The bench user's HTTP client (token auth, one keep-alive connection)."""

    def __init__(self, base: str, token: str) -> None:
        import requests

        self.base = base
        self.http = requests.Session()
        self.http.headers.update(Authorization=f"Token {token}", Accept="application/json")

    def post(self, path: str, body: dict, *, expect: int) -> tuple[dict, float, int]:
        """(answer, seconds from send to the whole answer read, its bytes)."""
        response, seconds = timed(
            lambda: self.http.post(f"{self.base}{path}", json=body, timeout=HTTP_TIMEOUT)
        )
        if response.status_code != expect:
            raise RuntimeError(f"POST {path} answered {response.status_code}: {response.text}")
        return response.json(), seconds, len(response.content)


class LargeWorkersBench:
    """Seed (if needed), start the fleet, measure the close, the archive and the export
    with the bystander, and always clean up (module docstring)."""

    def __init__(
        self,
        *,
        size: int,
        workers: int,
        progress: Callable[[str], None],
        bystander_sessions: int = BYSTANDER_SESSIONS,
    ) -> None:
        self.size = size
        self.workers = workers
        self.progress = progress
        self.bystander_sessions = bystander_sessions
        self.fleet: Fleet | None = None
        self.operations: list[str] = []
        self.housekeeping: dict[str, float] = {}

    def run(self) -> dict[str, Any]:
        if connection.vendor != "postgresql":
            raise RuntimeError("--large needs PostgreSQL (large operations run on it only).")
        from rest_framework.authtoken.models import Token

        load_start = load_average()
        seeded = ensure_table(self.size, self.progress)
        if foreign_sessions():
            raise RuntimeError(
                "--large-workers changes the seed and puts it back: it needs a database of "
                "its own, holding only the seed's sessions (this one has other users' too)."
            )
        self._restore()  # what a killed run may have left
        token = Token.objects.get_or_create(user=bench_user())[0].key
        self.archive_selection = archive_filter()
        workdir = Path(tempfile.mkdtemp(prefix="bulkops-large-"))
        previous = sigterm_as_interrupt()
        try:
            bystander = bystander_create(self.bystander_sessions)
            self.bystander_token = Token.objects.create(user=bystander).key
            self.progress(f"starting daphne and {self.workers} db_worker process(es)")
            self.fleet = Fleet(workdir, self.workers)
            self.fleet.start()
            self.api = Api(self.fleet.base, token)
            figures = self._stages()
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._teardown(workdir)
        return {
            "mode": "workers",
            "workers": self.workers,
            "machine": machine_facts(),
            "sessions": self.size_now(),
            "seed_seconds": rounded(seeded, 1),
            "load_average": {"start": load_start, "end": load_average()},
            **figures,
            "housekeeping_seconds": {k: rounded(v, 1) for k, v in self.housekeeping.items()},
        }

    def size_now(self) -> int:
        from bulkops.models import Session

        return Session.objects.count()

    def _stages(self) -> dict[str, Any]:
        self.progress(f"the bystander alone ({IDLE_SECONDS:g} s)")
        idle = bystander_for(
            self.fleet.base,
            self.bystander_token,
            sessions=self.bystander_sessions,
            seconds=IDLE_SECONDS,
        )
        self.progress("validate close (HTTP)")
        validate = self._validate("close", CLOSE_FILTER)
        validate.pop("token")
        self.progress("raw UPDATE (rolled back)")
        raw = raw_update()
        # The rolled-back UPDATE left a dead version of every row it touched and cleared
        # their pages' all-visible bits: a state of this bench's making, not a
        # production one, in which the create's count would read the heap.
        self._housekeep("vacuum after the raw UPDATE", vacuum)
        self.progress(f"close of {validate['eligible']:,} sessions, with the bystander")
        close = self._operation("close", {"filter": CLOSE_FILTER})
        self._housekeep("restore and vacuum after the close", self._restore)
        archive = self._archive()
        self._housekeep("restore and vacuum after the archive", self._restore)
        self.progress("export (CSV, gzip) of every live session")
        export = self._export()
        return {
            "bystander_sessions": self.bystander_sessions,
            "bystander_idle": idle,
            "validate": validate,
            "raw_update": raw,
            "close": close,
            "close_vs_raw": close["sessions_per_second"] / raw["rows_per_second"],
            "close_vs_raw_end_to_end": (
                close["end_to_end_sessions_per_second"] / raw["rows_per_second"]
            ),
            "archive": archive,
            "export": export,
        }

    def _archive(self) -> dict[str, Any]:
        selection = self.archive_selection
        self.progress(f"giving the archive's sessions {CONTENT_BYTES:,} bytes of content")
        prepared = self._housekeep("2 KB contents and vacuum", lambda: prepare_archive(selection))
        self._housekeep("2 KB contents and vacuum", vacuum)
        self.progress("validate archive (HTTP)")
        validate = self._validate("archive", selection)
        token = validate.pop("token")
        self.progress(f"archive of {validate['eligible']:,} sessions, with the bystander")
        body = {"filter": selection, "selection_token": token}
        run = self._operation("archive", body)
        return {
            "filter": selection,
            "content_bytes": CONTENT_BYTES,
            "sessions_given_content": prepared,
            "validate": validate,
            **run,
        }

    def _export(self) -> dict[str, Any]:
        run = self._operation("export", {"filter": {}, "format": "csv"}, bystander=False)
        name = BulkOperation.objects.get(pk=run["operation_id"]).export_file
        path = self.fleet.exports / name
        with gzip.open(path, "rt", newline="") as file:
            lines = sum(1 for _ in file)
        return {**run, "file": name, "file_mb": rounded(path.stat().st_size / 1e6, 1),
                "file_lines": lines}  # fmt: skip

    def _validate(self, action: str, selection: dict) -> dict[str, Any]:
        body = {"action": action, "filter": selection}
        answer, seconds, size = self.api.post("/api/bulk/sessions/validate", body, expect=200)
        return {
            "seconds": rounded(seconds, 3),
            "bytes": size,
            "eligible": answer["eligible_count"],
            "lists_truncated": answer.get("lists_truncated"),
            "token": answer["selection_token"],
        }

    def _operation(self, action: str, body: dict, *, bystander: bool = True) -> dict[str, Any]:
        """POST ``action`` with ``body``, wait for its end (the bystander listing meanwhile);
        its figures."""
        cpu = self.fleet.procs.cpu_seconds()
        watcher = None
        if bystander:
            watcher = Bystander(
                self.fleet.base, self.bystander_token, sessions=self.bystander_sessions
            ).start()
        try:
            path = f"/api/bulk/sessions/{get_action(action).path()}"
            answer, create_s, _ = self.api.post(path, body, expect=202)
            self.operations.append(answer["operation_id"])
            op = self._wait(answer["operation_id"])
        finally:
            seen = watcher.stop() if watcher else None
        run = (op.finished_at - op.started_at).total_seconds()
        end_to_end = (op.finished_at - op.created_at).total_seconds()
        used = self.fleet.procs.cpu_seconds()
        return {
            "operation_id": op.pk,
            "status": op.status,
            "sessions": op.processed,
            "succeeded": op.succeeded,
            "skipped": op.skipped,
            "failed": op.failed,
            "create_seconds": rounded(create_s, 3),
            "seconds": rounded(run, 2),
            "sessions_per_second": op.processed / run if run else None,
            "end_to_end_seconds": rounded(end_to_end, 2),
            "end_to_end_sessions_per_second": op.processed / end_to_end if end_to_end else None,
            "cpu_seconds": {k: round(v - cpu.get(k, 0.0), 1) for k, v in used.items()},
            "load_average": load_average(),
            "bystander": seen,
        }

    def _wait(self, operation_id: str) -> BulkOperation:
        """The operation once finished; ProcessError when a process died, RuntimeError
        past the bound."""
        bound = RUN_TIMEOUT + self.size * RUN_SECONDS_PER_SESSION
        deadline = time.monotonic() + bound
        while True:
            op = BulkOperation.objects.get(pk=operation_id)
            if op.status in FINISHED_OPERATION_STATUSES:
                return op
            death = self.fleet.procs.first_death()
            if death:
                raise ProcessError(death)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{op.action} {operation_id} not finished after {bound:.0f} s")
            time.sleep(POLL)

    def _housekeep(self, label: str, body: Callable[[], Any]) -> Any:
        result, seconds = timed(body)
        self.housekeeping[label] = self.housekeeping.get(label, 0.0) + seconds
        return result

    def _restore(self) -> None:
        restore()
        vacuum()

    def _teardown(self, workdir: Path) -> None:
        """Cancel what still runs (the workers still up to stop it), end the processes,
        put the seed back, remove the bystander and the files."""
        self.progress("cleaning up: operations, processes, table")
        try:
            if self.fleet is not None:
                self._cancel_unfinished()
        finally:
            try:
                if self.fleet is not None:
                    self.fleet.procs.stop_all(grace=10)
            finally:
                self._restore()
                bystander_remove()
                shutil.rmtree(workdir, ignore_errors=True)

    def _cancel_unfinished(self) -> None:
        from bulkops.engine import operation_cancel
        from bulkops.exceptions import OperationConflict

        unfinished = BulkOperation.objects.filter(
            pk__in=self.operations, status__in=ACTIVE_OPERATION_STATUSES
        )
        for op in unfinished:
            try:
                operation_cancel(operation=op)
            except OperationConflict:
                pass  # it finished meanwhile
        deadline = time.monotonic() + CANCEL_WAIT
        while unfinished.exists() and time.monotonic() < deadline:
            if self.fleet.procs.first_death():
                return
            time.sleep(POLL)
