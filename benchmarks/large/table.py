"""The large bench's table and users: the seed (once, kept), the bench's staff user, the
raw ``UPDATE`` reference, and — for the run with processes — the bystander, the archive's
2 KB contents and the statements that put the seed back as it was.

The seed (``benchmarks.scaleseed``) is deterministic, which is what makes it restorable
without a copy: a seeded closed session has ``closed_at = created_at + 1 day``, a seeded
archived one no blob, and every other one the content ``'Notes on ' || title``.
"""

from __future__ import annotations

import datetime
import random
import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.utils import timezone

from benchmarks.report import rounded
from benchmarks.scaleseed import OWNER_PREFIX, seed_scale
from benchmarks.scenarios import CONTENT_BYTES
from bulkops.models import Session, SessionStatus
from bulkops.seeding import make_corpus

LARGE_SIZES = {"100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}
BENCH_USER = "large-bench"
BYSTANDER_USER = "large-bystander"
#: What the close selects: every live active session.
CLOSE_FILTER = {"status": "active"}
#: The archive selects the live active sessions of the oldest part of the seed's time span.
ARCHIVE_SHARE = 0.5
SESSION_TABLE = Session._meta.db_table
#: The seed's own sessions (not the bench users').
SEEDED = (
    "owner_id IN (SELECT id FROM auth_user WHERE username LIKE %(owners)s)",
    {"owners": f"{OWNER_PREFIX}%"},
)


def timed(body: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = body()
    return result, time.perf_counter() - started


def ensure_table(size: int, progress: Callable[[str], None]) -> float:
    """Seed ``size`` sessions unless the seed is there; return the seconds it took."""
    started = time.perf_counter()
    if not get_user_model().objects.filter(username__startswith=OWNER_PREFIX).exists():
        owners = max(10, size // 1000)
        progress(f"seeding {size:,} sessions over {owners:,} owners")
        seed_scale(sessions=size, owners=owners)
        vacuum()
    return time.perf_counter() - started


def vacuum() -> None:
    """Fresh statistics and visibility map of the session table (outside a transaction)."""
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {SESSION_TABLE}")


def bench_user():
    """The staff user with ``bulkops.run_large_operation`` every large figure is taken as."""
    user, _ = get_user_model().objects.get_or_create(
        username=BENCH_USER, defaults={"is_staff": True}
    )
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="bulkops",
            codename__in=["run_large_operation", "change_session", "view_session"],
        )
    )
    return get_user_model().objects.get(pk=user.pk)  # no cached permissions


def raw_update() -> dict[str, Any]:
    """The reference: one ``UPDATE`` of the rows the close acts on, rolled back."""

    def update() -> int:
        return Session.objects.filter(status="active", deleted_at__isnull=True).update(
            status="closed", closed_at=timezone.now(), updated_at=timezone.now()
        )

    with transaction.atomic():
        rows, seconds = timed(update)
        transaction.set_rollback(True)
    return {"rows": rows, "seconds": rounded(seconds, 2), "rows_per_second": rows / seconds}


# --- the run with processes ------------------------------------------------------------------
def bystander_create(sessions: int):
    """A non-staff user with ``sessions`` closed sessions of its own (neither the close
    nor the archive selects them); return it."""
    User = get_user_model()
    User.objects.filter(username=BYSTANDER_USER).delete()
    user = User.objects.create_user(BYSTANDER_USER, password=None)
    now = timezone.now()
    Session.objects.bulk_create(
        (
            Session(
                id=f"bystander-{n:05d}",
                owner=user,
                title=f"Bystander {n}",
                status=SessionStatus.CLOSED,
                content="x" * 200,
                created_at=now - datetime.timedelta(minutes=n),
                closed_at=now,
            )
            for n in range(sessions)
        ),
        batch_size=1000,
    )
    return user


def bystander_remove() -> None:
    get_user_model().objects.filter(username=BYSTANDER_USER).delete()


def archive_filter() -> dict[str, str]:
    """Live active sessions created in the oldest ``ARCHIVE_SHARE`` of the seed's span."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT min(created_at), max(created_at) FROM {SESSION_TABLE} WHERE {SEEDED[0]}",
            SEEDED[1],
        )
        first, last = cursor.fetchone()
    before = first + (last - first) * ARCHIVE_SHARE
    return {"status": "active", "created_before": before.isoformat()}


def prepare_archive(selected: dict[str, str]) -> int:
    """Give every session of the archive's filter ``CONTENT_BYTES`` of text (a slice of a
    random-word corpus at an offset hashed from its id, as the action benches' sessions
    have); return how many. ``restore`` takes it back."""
    corpus = make_corpus(random.Random(19), CONTENT_BYTES)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {SESSION_TABLE} SET content = substr(%(corpus)s, 1 + "
            f"abs(hashtext(id)) %% %(offsets)s, %(size)s) WHERE status = 'active' "
            f"AND deleted_at IS NULL AND created_at < %(before)s AND {SEEDED[0]}",
            {
                "corpus": corpus,
                "offsets": len(corpus) - CONTENT_BYTES,
                "size": CONTENT_BYTES,
                "before": selected["created_before"],
                **SEEDED[1],
            },
        )
        return cursor.rowcount


#: What the bench's operations changed in the seed, and how the seed had it.
RESTORE = (
    # Closed by the bench (a seeded closed session was closed a day after its creation).
    "UPDATE {t} SET status = 'active', closed_at = NULL, updated_at = created_at "
    "WHERE status = 'closed' AND closed_at <> created_at + interval '1 day' AND {seeded}",
    # Archived by the bench (a seeded archived session has no blob).
    "UPDATE {t} SET status = 'active', content = 'Notes on ' || title, archived_at = NULL, "
    "archive_blob = NULL, archive_original_size = NULL, archive_compressed_size = NULL, "
    "updated_at = created_at WHERE status = 'archived' AND archive_blob IS NOT NULL AND {seeded}",
    # Given 2 KB and not archived.
    "UPDATE {t} SET content = 'Notes on ' || title "
    "WHERE status = 'active' AND content <> 'Notes on ' || title AND {seeded}",
)


def foreign_sessions() -> bool:
    """Whether the table holds sessions of users other than the seed's owners (and the
    bystander): ``restore`` knows only the seed's shape."""
    others = get_user_model().objects.exclude(username__startswith=OWNER_PREFIX)
    return Session.objects.filter(owner__in=others.exclude(username=BYSTANDER_USER)).exists()


def restore() -> int:
    """Put back what the bench's close and archive (and the archive's contents) changed in
    the seed; return how many rows were put back. Safe to run again."""
    restored = 0
    with connection.cursor() as cursor:
        for statement in RESTORE:
            cursor.execute(statement.format(t=SESSION_TABLE, seeded=SEEDED[0]), SEEDED[1])
            restored += cursor.rowcount
    return restored
