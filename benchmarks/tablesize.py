"""``bulkops_bench --table-size 20k|1m|10m``: the paths that must not grow with the table.

The database is seeded once to the size asked (``benchmarks.scaleseed``: sessions over
``size / 1,000`` owners, and bulk operations with ten items each), then ``manage.py
serve`` runs as a subprocess on it (daphne, no worker) and every path is requested
``requests`` times in a row (after two warm-ups); the report gives p50/p90 per path,
and the median time of the path's database queries measured in-process (``sql_ms``):
on a shared machine the served figures carry its load, the query time much less so.
The seeded rows are kept: use a database of your own (a 10M table is ~4 GB).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection

from benchmarks.processes import Processes, current_env, healthy
from benchmarks.report import machine_facts, percentile, rounded
from benchmarks.scaleseed import OWNER_PREFIX, seed_operations, seed_scale
from bulkops.models import BulkOperation, Session

TABLE_SIZES = {"20k": 20_000, "1m": 1_000_000, "10m": 10_000_000}
WARMUP = 2
#: In-process requests per path whose query time is kept (after one warm-up).
SQL_RUNS = 5
ITEMS_PER_OPERATION = 10


@dataclass(frozen=True)
class Path_:
    name: str
    who: str  # typical | heavy | staff | admin
    url: str
    body: dict | None = None


def _paths(rare: str) -> list[Path_]:
    """Every path that must not grow with the table, for the caller it concerns."""
    sessions = "/api/sessions/"
    validate = "/api/bulk/sessions/validate"
    paths = []
    for who in ("typical", "heavy"):
        paths += [
            Path_(f"{who} owner: list, first page", who, sessions),
            Path_(f"{who} owner: list ?status=closed", who, f"{sessions}?status=closed"),
            Path_(f"{who} owner: list ?ordering=title", who, f"{sessions}?ordering=title"),
            Path_(f"{who} owner: list ?search=budget", who, f"{sessions}?search=budget"),
            Path_(f"{who} owner: info", who, "/api/bulk/sessions/info"),
            Path_(
                f"{who} owner: validate close filter status=active",
                who,
                validate,
                {"action": "close", "filter": {"status": "active"}},
            ),
        ]
    paths += [
        Path_("staff: list everyone, first page", "staff", sessions),
        Path_("staff: list everyone ?status=closed", "staff", f"{sessions}?status=closed"),
        Path_("staff: list everyone ?page=1000", "staff", f"{sessions}?page=1000"),
        Path_("staff: search everyone ?search=budget", "staff", f"{sessions}?search=budget"),
        Path_("staff: search everyone, rare title", "staff", f"{sessions}?search={rare}"),
        Path_("staff: info", "staff", "/api/bulk/sessions/info"),
        Path_(
            "staff: validate export filter status=closed",
            "staff",
            validate,
            {"action": "export", "filter": {"status": "closed"}},
        ),
        Path_("admin: sessions changelist", "admin", "/admin/bulkops/session/"),
        Path_(
            "admin: sessions ?status=closed",
            "admin",
            "/admin/bulkops/session/?status__exact=closed",
        ),
        Path_("admin: sessions ?q=budget", "admin", "/admin/bulkops/session/?q=budget"),
        Path_("admin: bulk operations changelist", "admin", "/admin/bulkops/bulkoperation/"),
    ]
    return paths


def _user(username: str, **flags):
    User = get_user_model()
    user, created = User.objects.get_or_create(username=username, defaults=flags)
    if created:
        user.set_unusable_password()
        user.save()
    return user


class TableSizeBench:
    """Seed (if needed) to ``size`` sessions, serve, request every path, report."""

    def __init__(self, *, size: int, requests: int, progress: Callable[[str], None]) -> None:
        self.size = size
        self.requests = requests
        self.progress = progress
        self.notes: list[str] = []
        self.seed_seconds = 0.0

    def ensure_table(self) -> None:
        started = time.perf_counter()
        owners = max(10, self.size // 1000)
        if not get_user_model().objects.filter(username__startswith=OWNER_PREFIX).exists():
            self.progress(f"seeding {self.size:,} sessions over {owners:,} owners")
            seed_scale(sessions=self.size, owners=owners)
        operations = min(100_000, self.size // 10)
        if not BulkOperation.objects.exists():
            self.progress(f"seeding {operations:,} operations")
            seed_operations(operations=operations, items_per_operation=ITEMS_PER_OPERATION)
        self.seed_seconds = time.perf_counter() - started

    def table_facts(self) -> dict[str, Any]:
        facts = {
            "sessions": Session.objects.count(),
            "operations": BulkOperation.objects.count(),
        }
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
                facts["database_size"] = cursor.fetchone()[0]
        return facts

    def callers(self) -> dict[str, dict[str, str]]:
        """Request headers (a token, or the admin's session cookie) per caller."""
        from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
        from django.contrib.sessions.backends.db import SessionStore
        from rest_framework.authtoken.models import Token

        owners = get_user_model().objects.filter(username__startswith=OWNER_PREFIX)
        count = owners.count()
        heavy = owners.get(username=f"{OWNER_PREFIX}00001")
        typical = owners.get(username=f"{OWNER_PREFIX}{count // 2:05d}")
        staff = _user("scale-staff", is_staff=True)
        staff.user_permissions.add(
            Permission.objects.get(content_type__app_label="bulkops", codename="view_session")
        )
        admin = _user("scale-admin", is_staff=True, is_superuser=True)
        headers = {
            who: {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}
            for who, user in (("typical", typical), ("heavy", heavy), ("staff", staff))
        }
        store = SessionStore()
        store[SESSION_KEY] = str(admin.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = admin.get_session_auth_hash()
        store.save()
        headers["admin"] = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={store.session_key}"}
        return headers

    def sql_times(self, paths: list[Path_]) -> dict[str, float]:
        """Per path, the median time its database queries took (in-process, Django's
        test client; the first of ``SQL_RUNS + 1`` requests is a warm-up): the part of a
        request that may grow with the table, apart from the machine's load."""
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        owners = get_user_model().objects.filter(username__startswith=OWNER_PREFIX)
        names = {
            "typical": f"{OWNER_PREFIX}{owners.count() // 2:05d}",
            "heavy": f"{OWNER_PREFIX}00001",
            "staff": "scale-staff",
            "admin": "scale-admin",
        }
        clients = {}
        for who, name in names.items():
            clients[who] = Client()
            clients[who].force_login(get_user_model().objects.get(username=name))
        times = {}
        for path in paths:
            samples = []
            for _ in range(SQL_RUNS + 1):
                with CaptureQueriesContext(connection) as captured:
                    _client_call(clients[path.who], path)
                samples.append(sum(float(q["time"]) for q in captured.captured_queries) * 1000)
            times[path.name] = rounded(statistics.median(samples[1:]))
        return times

    def run(self) -> dict[str, Any]:
        self.ensure_table()
        facts = self.table_facts()
        headers = self.callers()
        self.progress("timing the queries of each path in-process")
        sql = self.sql_times(_paths(f"%23{self.size // 3}"))
        rare = f"%23{self.size // 3}"  # "#<n>": one title
        connection.close()
        workdir = Path(tempfile.mkdtemp(prefix="bulkops-table-size-"))
        procs = Processes(workdir, current_env(BULKOPS_RATE_LIMIT_VALIDATE="1000000/m"))
        try:
            base = procs.server("serve", embedded=True, worker=False, ready=healthy)
            results = self._measure(base, headers, _paths(rare))
        finally:
            procs.stop_all(grace=30)
            shutil.rmtree(workdir, ignore_errors=True)
        for result in results:
            result["sql_ms"] = sql.get(result["path"])
        return {
            "table_size": self.size,
            "table": facts,
            "machine": machine_facts(),
            "load_average": os.getloadavg(),
            "requests_per_path": self.requests,
            "seed_seconds": round(self.seed_seconds, 1),
            "paths": results,
            "notes": self.notes,
        }

    def _measure(self, base: str, headers: dict, paths: list[Path_]) -> list[dict[str, Any]]:
        import requests

        http = requests.Session()
        results = []
        for path in paths:
            samples, statuses = [], set()
            for run in range(WARMUP + self.requests):
                started = time.perf_counter()
                if path.body is None:
                    response = http.get(base + path.url, headers=headers[path.who], timeout=120)
                else:
                    response = http.post(
                        base + path.url, json=path.body, headers=headers[path.who], timeout=120
                    )
                elapsed = (time.perf_counter() - started) * 1000
                statuses.add(response.status_code)
                if run >= WARMUP:
                    samples.append(elapsed)
            results.append(_summary(path, samples, statuses))
            self.progress(f"{path.name}: p50 {results[-1]['p50_ms']} ms")
        return results


def _client_call(client, path: Path_):
    if path.body is None:
        return client.get(path.url, secure=True)
    return client.post(
        path.url, json.dumps(path.body), content_type="application/json", secure=True
    )


def _summary(path: Path_, samples: list[float], statuses: set[int]) -> dict[str, Any]:
    return {
        "path": path.name,
        "url": path.url,
        "statuses": sorted(statuses),
        "p50_ms": rounded(percentile(samples, 50)),
        "p90_ms": rounded(percentile(samples, 90)),
        "mean_ms": rounded(statistics.fmean(samples)),
    }


def render_table_size(data: dict[str, Any]) -> str:
    lines = [
        f"Table size {data['table_size']:,}: {data['table']} — load {data['load_average']}",
        f"{'path':<55} {'p50 ms':>8} {'p90 ms':>8} {'SQL ms':>8}  status",
    ]
    for r in data["paths"]:
        lines.append(
            f"{r['path']:<55} {r['p50_ms']:>8} {r['p90_ms']:>8} {r.get('sql_ms')!s:>8}  "
            f"{r['statuses']}"
        )
    return "\n".join(lines)
