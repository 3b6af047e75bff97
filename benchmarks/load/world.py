"""The load run's world: a PostgreSQL database of its own (created, migrated, dropped),
a Redis prefix of its own (removed), its users and sessions, and the production layout
on one machine — daphne servers and ``db_worker`` processes, ``DEBUG=0`` — started and
always ended through :mod:`benchmarks.processes`."""

from __future__ import annotations

import json
import math
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.processes import (
    ProcessDB,
    Processes,
    drop_redis_keys,
    healthy,
    process_env,
)

#: Subscribers per user at most: half of BULKOPS_MAX_WS_CONNECTIONS_PER_USER's default (20).
SUBSCRIBERS_PER_USER = 10
#: Load databases are named ``bulkops_load_<random>`` (a crashed run's are easy to find).
DATABASE_PREFIX = "bulkops_load"

SEED = """
import json, sys
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.authtoken.models import Token
from bulkops.models import Session
spec = json.loads(sys.stdin.read())
out = []
for u in range(spec["users"]):
    user = get_user_model().objects.create_user(f"load-{u}", password=None)
    token = Token.objects.create(user=user)
    Session.objects.bulk_create(
        (
            Session(
                id=f"u{u}-s{i:04d}", owner=user, title=f"Load {u}/{i}", content="x" * 200,
                deleted_at=timezone.now() if i % 5 == 0 else None,
            )
            for i in range(spec["sessions"])
        ),
        batch_size=500,
    )
    out.append({"user_id": user.pk, "token": token.key, "prefix": f"u{u}-s"})
print(json.dumps(out))
"""


@dataclass
class LoadOptions:
    clients: int = 50
    subscribers: int = 200
    duration: float = 60.0
    #: 0: enough users for SUBSCRIBERS_PER_USER (at least 2, so isolation is checked too).
    users: int = 0
    sessions_per_user: int = 200
    servers: int = 2
    workers: int = 2

    def user_count(self) -> int:
        return self.users or max(2, math.ceil(self.subscribers / SUBSCRIBERS_PER_USER))


class LoadWorld:
    """The database, the Redis prefix and the processes of one load run; ``close()``
    ends every process and drops the database whatever happened before."""

    def __init__(self, options: LoadOptions, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.db: ProcessDB | None = None
        self.procs: Processes | None = None
        self.bases: list[str] = []

    @property
    def name(self) -> str:
        """The database's name (also the Redis prefix)."""
        return self.db.name

    @property
    def prefix(self) -> str:
        return self.db.name

    @property
    def processes(self):
        """(name, Popen) of every process started."""
        return self.procs.running if self.procs else []

    def setup(self) -> list[dict[str, Any]]:
        """Create and migrate the database, seed the users; start workers and servers.
        Return the users (``user_id``, ``token``, ``prefix`` of their session ids)."""
        self.db = ProcessDB(self.workdir, postgres=True, prefix=DATABASE_PREFIX)
        env = process_env(
            database_url=self.db.url,
            workdir=self.workdir,
            redis_prefix=self.db.name,
            # The production layout, on plain HTTP on purpose (docs/production.md).
            production=True,
        )
        self.procs = Processes(self.workdir, env)
        self.procs.run("migrate", "--no-input", "-v", "0")
        self.procs.run("collectstatic", "--no-input", "-v", "0")
        spec = {"users": self.options.user_count(), "sessions": self.options.sessions_per_user}
        out = self.procs.run("shell", "-c", SEED, input=json.dumps(spec))
        users = json.loads(out.strip().splitlines()[-1])
        for n in range(self.options.workers):
            self.procs.worker(f"worker-{n + 1}", interval=0.1)
        self.bases = [
            self.procs.server(f"daphne-{n + 1}", ready=healthy) for n in range(self.options.servers)
        ]
        return users

    def server_errors_logged(self) -> dict[str, int]:
        """Tracebacks in each process's log (a 500 is logged with one)."""
        return {
            name: self.procs.log(name, tail=None).count("Traceback") for name, _ in self.processes
        }

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each process, and this one, has used so far."""
        used = self.procs.cpu_seconds() if self.procs else {}
        own = resource.getrusage(resource.RUSAGE_SELF)
        used["bench client (this process)"] = own.ru_utime + own.ru_stime
        return used

    def query(self, sql: str, *params: Any) -> list[tuple]:
        return self.db.query(sql, *params)

    def close(self) -> None:
        """End every process (its whole group), drop the database, remove the Redis keys."""
        try:
            if self.procs is not None:
                self.procs.stop_all(grace=10)
        finally:
            if self.db is not None:
                self.db.drop()
                drop_redis_keys(self.db.name)
