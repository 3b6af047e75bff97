"""Millions of sessions over thousands of owners, set-based (``seed_demo --owners``).

Used to measure the paths that must not grow with the table. One
``INSERT … SELECT`` per chunk of a million rows: ``generate_series`` on PostgreSQL, a
recursive CTE on SQLite; nothing is built in Python. Every value comes from a
deterministic hash of the row number ``g``, so two seeds of the same size are the same
table (and SQLite's query flattener cannot evaluate a ``random()`` twice):

- owners ``scale-owner-00001`` …: skewed — owner *k* gets about ``sqrt`` of a share
  (the busiest owner ~1 % of all rows, the median owner ~0.7× the mean), unusable
  passwords;
- statuses 60 % active, 25 % closed, 14.5 % archived, 0.5 % processing; 4 % soft-deleted
  (any status); ``created_at`` from ``years`` ago until now, rising with ``g`` (the
  physical order follows time, as a table written over years does), a few minutes of
  jitter;
- titles of three words out of ``SCALE_WORDS`` plus ``#g`` (a word matches ~6 % of rows,
  ``#1234567`` one row); a short content; archived rows have no blob (content ``""``).

On PostgreSQL the session table's secondary indexes are dropped before a large seed
and rebuilt after it (as ``pg_restore`` does: one sort per index instead of millions of
random inserts), then the table is analysed.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from bulkops.models import Session

SESSION_TABLE = Session._meta.db_table
OWNER_PREFIX = "scale-owner-"
#: Rows per INSERT … SELECT.
CHUNK = 1_000_000
#: At least this many rows: drop and rebuild the secondary indexes around the seed.
REBUILD_INDEXES_FROM = 200_000
#: The multiplicative hashes (row number → pseudo-random value below HASH_MOD).
HASH_MOD = 1_000_003
SCALE_WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda omicron sigma "
    "tau upsilon omega report invoice meeting review planning retro budget launch "
    "support onboarding migration incident audit roadmap design research interview "
    "demo training workshop contract renewal forecast backlog sprint release hotfix "
    "customer partner vendor quarterly weekly"
).split()

ProgressFn = Callable[[int], None]


def _hash(n: int, salt: int) -> str:
    """``g`` hashed to ``0 … HASH_MOD-1`` (multiplicative, different per salt)."""
    multipliers = (2654435761, 2246822519, 3266489917, 668265263, 374761393, 1181783497)
    return f"((g * {multipliers[salt]} + {salt * 7919 + n}) %% {HASH_MOD})"


@dataclass(frozen=True)
class Dialect:
    """What differs between PostgreSQL and SQLite in the seed statement."""

    series: str  # a CTE named seq(g) from %(first)s to %(last)s
    padded: str  # g as 9 digits
    moment: str  # the created_at of row g, from %(start)s (epoch seconds) and %(step)s
    plus_days: str  # "{moment} + N days" with {days}
    metadata: str


POSTGRES = Dialect(
    series="seq(g) AS (SELECT generate_series(%(first)s::bigint, %(last)s::bigint))",
    padded="lpad(g::text, 9, '0')",
    moment="to_timestamp(%(start)s + g * %(step)s + {jitter} %% 600)",
    plus_days="(created_at + interval '{days} days')",
    metadata="jsonb_build_object('n', g, 'source', 'scale')",
)
SQLITE = Dialect(
    series="seq(g) AS (SELECT %(first)s UNION ALL SELECT g + 1 FROM seq WHERE g < %(last)s)",
    padded="printf('%%09d', g)",
    moment="strftime('%%Y-%%m-%%d %%H:%%M:%%f', %(start)s + g * %(step)s + {jitter} %% 600, "
    "'unixepoch')",
    plus_days="strftime('%%Y-%%m-%%d %%H:%%M:%%f', created_at, '+{days} days')",
    metadata="json_object('n', g, 'source', 'scale')",
)


def _rows_sql(d: Dialect) -> str:
    """The SELECT of rows ``g`` with their hashed status, owner, words and times."""
    words = ", ".join(f"({i}, '{w}')" for i, w in enumerate(SCALE_WORDS))
    count = len(SCALE_WORDS)
    owner = f"({_hash(1, 0)} * {_hash(1, 0)} / {HASH_MOD}) * %(owners)s / {HASH_MOD}"
    status = (
        "CASE WHEN s < 600000 THEN 'active' WHEN s < 850000 THEN 'closed' "
        "WHEN s < 995000 THEN 'archived' ELSE 'processing' END"
    )
    return f"""
        WITH RECURSIVE {d.series},
        words(i, w) AS (VALUES {words}),
        base AS (
            SELECT g, {_hash(2, 1)} AS s, {_hash(3, 2)} %% 100 AS del,
                   %(first_owner)s + {owner} AS owner_id,
                   {_hash(4, 3)} %% {count} AS w1, {_hash(5, 4)} %% {count} AS w2,
                   {_hash(6, 5)} %% {count} AS w3,
                   {d.moment.format(jitter=_hash(7, 3))} AS created_at
            FROM seq
        ),
        shaped AS (
            SELECT base.*, {status} AS status,
                   upper(substr(a.w, 1, 1)) || substr(a.w, 2) || ' ' || b.w || ' ' || c.w
                       || ' #' || g AS title
            FROM base
            JOIN words a ON a.i = base.w1
            JOIN words b ON b.i = base.w2
            JOIN words c ON c.i = base.w3
        )
        SELECT %(prefix)s || {d.padded}, owner_id, title, status,
               CASE WHEN status = 'archived' THEN '' ELSE 'Notes on ' || title END,
               {d.metadata}, created_at, created_at,
               CASE WHEN status = 'closed' THEN {d.plus_days.format(days=1)} END,
               CASE WHEN status = 'archived' THEN {d.plus_days.format(days=30)} END,
               CASE WHEN del < 4 THEN {d.plus_days.format(days=60)} END
        FROM shaped
    """


def seed_statement(vendor: str) -> str:
    dialect = POSTGRES if vendor == "postgresql" else SQLITE
    columns = (
        "id, owner_id, title, status, content, metadata, created_at, updated_at, "
        "closed_at, archived_at, deleted_at"
    )
    return f"INSERT INTO {SESSION_TABLE} ({columns}) {_rows_sql(dialect)}"


def create_owners(count: int) -> int:
    """Create ``count`` owners (``scale-owner-NNNNN``) in one statement; return the
    first one's id (their ids are consecutive: one statement, one transaction)."""
    User = get_user_model()
    existing = User.objects.filter(username__startswith=OWNER_PREFIX).count()
    now = timezone.now()
    users = [
        User(
            username=f"{OWNER_PREFIX}{existing + n + 1:05d}",
            password="!",  # unusable
            date_joined=now,
        )
        for n in range(count)
    ]
    with transaction.atomic():
        created = User.objects.bulk_create(users, batch_size=5000)
    ids = sorted(u.pk for u in created if u.pk is not None)
    if not ids:  # backends that do not return ids from bulk_create
        ids = sorted(
            User.objects.filter(username__in=[u.username for u in users]).values_list(
                "pk", flat=True
            )
        )
    if ids[-1] - ids[0] + 1 != count:
        raise RuntimeError("The new owners' ids are not consecutive; seed into a quiet database.")
    return ids[0]


def _secondary_indexes() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i "
            "WHERE i.tablename = %s AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
            "WHERE c.conname = i.indexname)",
            [SESSION_TABLE],
        )
        return cursor.fetchall()


def _analyze(cursor, table: str) -> None:
    """Fresh statistics; on PostgreSQL outside a transaction also the visibility map
    (index-only scans), which VACUUM cannot build inside one."""
    vacuum = connection.vendor == "postgresql" and not connection.in_atomic_block
    cursor.execute(f"{'VACUUM (ANALYZE)' if vacuum else 'ANALYZE'} {table}")


def _insert_chunks(params: dict, sessions: int, progress: ProgressFn) -> None:
    sql = seed_statement(connection.vendor)
    for first in range(0, sessions, CHUNK):
        last = min(sessions, first + CHUNK) - 1
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, {**params, "first": first, "last": last})
        progress(last + 1)


def seed_scale(
    *,
    sessions: int,
    owners: int,
    years: float = 5.0,
    prefix: str | None = None,
    progress: ProgressFn | None = None,
) -> str:
    """Create ``owners`` owners and ``sessions`` sessions spread over them; return the
    id prefix of the new sessions (``<prefix>-000000042``)."""
    progress = progress or (lambda _done: None)
    prefix = prefix or f"sc{secrets.token_hex(2)}"
    end = timezone.now()
    span = datetime.timedelta(days=365.25 * years).total_seconds()
    params = {
        "prefix": f"{prefix}-",
        "owners": owners,
        "first_owner": create_owners(owners),
        "start": int(end.timestamp() - span),
        "step": span / max(sessions, 1),
    }
    rebuild = connection.vendor == "postgresql" and sessions >= REBUILD_INDEXES_FROM
    indexes = _secondary_indexes() if rebuild else []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET synchronous_commit = off")
            cursor.execute("SET maintenance_work_mem = '1GB'")
        for name, _definition in indexes:
            cursor.execute(f"DROP INDEX IF EXISTS {connection.ops.quote_name(name)}")
    try:
        _insert_chunks(params, sessions, progress)
    finally:
        with connection.cursor() as cursor:
            for _name, definition in indexes:
                cursor.execute(definition)
            _analyze(cursor, SESSION_TABLE)
            if connection.vendor == "postgresql":
                cursor.execute("RESET synchronous_commit")
                cursor.execute("RESET maintenance_work_mem")
    return prefix


# --- operations (the admin's Bulk operations list) -----------------------------------------
OPERATION_TABLE = "bulkops_bulkoperation"
ITEM_TABLE = "bulkops_bulkoperationitem"
OPERATION_ACTIONS = ("close", "delete", "archive", "restore", "export")
OPERATION_IDS = {
    "postgresql": "'op-' || lpad(to_hex(g), 32, '0')",
    "sqlite": "'op-' || printf('%%032x', g)",
}
OPERATION_TIMES = {
    "postgresql": (
        "to_timestamp(%(start)s + g * %(step)s)",
        "to_timestamp(%(start)s + g * %(step)s + 1)",
    ),
    "sqlite": (
        "strftime('%%Y-%%m-%%d %%H:%%M:%%f', %(start)s + g * %(step)s, 'unixepoch')",
        "strftime('%%Y-%%m-%%d %%H:%%M:%%f', %(start)s + g * %(step)s + 1, 'unixepoch')",
    ),
}


def _operations_sql(vendor: str) -> str:
    dialect = POSTGRES if vendor == "postgresql" else SQLITE
    created, finished = OPERATION_TIMES[vendor]
    actions = " ".join(f"WHEN {i} THEN '{a}'" for i, a in enumerate(OPERATION_ACTIONS))
    owner = f"({_hash(1, 0)} * {_hash(1, 0)} / {HASH_MOD}) * %(owners)s / {HASH_MOD}"
    return f"""
        INSERT INTO {OPERATION_TABLE} (id, user_id, action, params, reason, source, status,
            total, processed, succeeded, skipped, failed, cancelled, created_at, started_at,
            finished_at, error, cancel_requested, pause_requested, paused_seconds, attempts,
            request_fingerprint, export_file, version)
        WITH RECURSIVE {dialect.series}
        SELECT {OPERATION_IDS[vendor]}, %(first_owner)s + {owner},
               CASE g %% 5 {actions} END, '{{}}', '', 'api', 'completed',
               %(items)s, %(items)s, %(items)s, 0, 0, 0, {created}, {created}, {finished},
               '', false, false, 0, 1, '', '', 3
        FROM seq
    """


def seed_operations(*, operations: int, items_per_operation: int, days: float = 90.0) -> None:
    """``operations`` finished operations of the scale owners over the last ``days``, each
    with ``items_per_operation`` succeeded items (set-based, chunked)."""
    User = get_user_model()
    owners = User.objects.filter(username__startswith=OWNER_PREFIX).order_by("pk")
    first_owner = owners.values_list("pk", flat=True).first()
    if first_owner is None:
        raise RuntimeError("Seed the scale owners first (seed_scale).")
    span = datetime.timedelta(days=days).total_seconds()
    params = {
        "owners": owners.count(),
        "first_owner": first_owner,
        "items": items_per_operation,
        "start": int(timezone.now().timestamp() - span),
        "step": span / max(operations, 1),
    }
    sql = _operations_sql(connection.vendor)
    numbers = " UNION ALL ".join(f"SELECT {n} AS n" for n in range(items_per_operation))
    items = (
        f"INSERT INTO {ITEM_TABLE} (operation_id, session_id, outcome, reason, message, "
        f"previous_status) SELECT o.id, 'sc-' || substr(o.id, 20) || '-' || k.n, "
        f"'succeeded', '', '', 'active' FROM {OPERATION_TABLE} o CROSS JOIN ({numbers}) k "
        f"WHERE o.id >= %(low)s AND o.id <= %(high)s"
    )
    ids = OPERATION_IDS[connection.vendor]
    for first in range(0, operations, CHUNK // max(items_per_operation, 1)):
        last = min(operations, first + CHUNK // max(items_per_operation, 1)) - 1
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, {**params, "first": first, "last": last})
            cursor.execute(f"SELECT {ids.replace('g', '%(g)s')}", {"g": first})
            low = cursor.fetchone()[0]
            cursor.execute(f"SELECT {ids.replace('g', '%(g)s')}", {"g": last})
            high = cursor.fetchone()[0]
            if items_per_operation:
                cursor.execute(items, {"low": low, "high": high})
    with connection.cursor() as cursor:
        for table in (OPERATION_TABLE, ITEM_TABLE):
            _analyze(cursor, table)
