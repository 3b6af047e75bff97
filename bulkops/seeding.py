"""Demo and benchmark data, created fast with bulk_create (``seed_demo``, ``serve``)."""

from __future__ import annotations

import datetime
import json
import random
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import transaction
from django.utils import timezone

from bulkops.actions.archive import compress_content
from bulkops.models import Session, SessionExport, SessionStatus

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

BATCH = 2000
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def make_corpus(rng: random.Random, size: int) -> str:
    """Random words, twice as long as one session's content: contents are slices of it."""
    words = []
    length = 0
    while length < 2 * size + 64:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def content_text(rng: random.Random, corpus: str, size: int) -> str:
    """A ``size``-character slice of ``corpus`` at a random offset ("" when size <= 0)."""
    if size <= 0:
        return ""
    start = rng.randrange(0, len(corpus) - size)
    return corpus[start : start + size]


#: ``n % 20`` -> the state a mixed seed gives session ``n`` (the rest stay active).
MIXED_STATES = {1: "closed", 2: "closed", 3: "closed", 4: "archived", 5: "archived",
                6: "processing", 7: "deleted"}  # fmt: skip


def _seed_session(n: int, *, owner, rng, now, content: str, mixed: bool, count: int) -> Session:
    """Session ``n`` of a seed, in the state ``MIXED_STATES`` gives it when ``mixed``."""
    state = MIXED_STATES.get(n % 20, SessionStatus.ACTIVE) if mixed else SessionStatus.ACTIVE
    session = Session(
        owner=owner,
        title=f"{rng.choice(WORDS).title()} session {n}",
        status=SessionStatus.ACTIVE if state == "deleted" else state,
        content=content,
        metadata={"n": n, "source": "seed", "tags": [rng.choice(WORDS)]},
        created_at=now - datetime.timedelta(minutes=count - n),
        deleted_at=now if state == "deleted" else None,
    )
    if state == SessionStatus.CLOSED:
        session.closed_at = now
    if state == SessionStatus.ARCHIVED:
        blob, size = compress_content(content)
        session.archive_blob, session.archive_original_size = blob, size
        session.archive_compressed_size = len(blob)
        session.content, session.archived_at = "", now
    return session


def seed_sessions(
    *,
    owner: AbstractBaseUser,
    count: int,
    content_bytes: int = 2000,
    mixed_states: bool = True,
    exports_every: int = 10,
    prefix: str | None = None,
    seed: int | None = None,
) -> list[str]:
    """Create ``count`` sessions for ``owner`` with bulk_create and return their ids.

    With ``mixed_states`` the sessions cover every state (mostly active; some closed,
    archived, processing and soft-deleted); every ``exports_every``-th gets an export.
    """
    rng = random.Random(seed)
    prefix = prefix or f"s{secrets.token_hex(3)}"
    now = timezone.now()
    corpus = make_corpus(rng, content_bytes)
    ids = [f"{prefix}-{n:06d}" for n in range(count)]
    with transaction.atomic():
        for start in range(0, count, BATCH):
            sessions, exports = [], []
            for n in range(start, min(count, start + BATCH)):
                session = _seed_session(
                    n,
                    owner=owner,
                    rng=rng,
                    now=now,
                    content=content_text(rng, corpus, content_bytes),
                    mixed=mixed_states,
                    count=count,
                )
                session.id = ids[n]
                sessions.append(session)
                if exports_every and n % exports_every == 0:
                    exports.append(
                        SessionExport(
                            session_id=ids[n], format="csv", file=f"{ids[n]}.csv", size=128
                        )
                    )
            Session.objects.bulk_create(sessions, batch_size=BATCH)
            SessionExport.objects.bulk_create(exports, batch_size=BATCH)
    return ids


DEMO_USERS = (
    # username, is_staff, is_superuser, sessions
    ("admin", True, True, 0),
    ("staff", True, False, 0),
    ("demo", False, False, 300),
    ("alice", False, False, 100),
)


def seed_demo(*, credentials_file: Path) -> dict[str, str] | None:
    """Create the demo users and their sessions unless any user exists; return the
    {username: password} created (also written to ``credentials_file``), else None."""
    User = get_user_model()
    if User.objects.exists():
        return None
    passwords: dict[str, str] = {}
    staff_perms = Permission.objects.filter(
        content_type__app_label="bulkops",
        codename__in=["view_session", "change_session", "delete_session", "view_bulkoperation"],
    )
    for username, is_staff, is_superuser, sessions in DEMO_USERS:
        password = secrets.token_urlsafe(9)
        user = User.objects.create_user(
            username=username, password=password, is_staff=is_staff, is_superuser=is_superuser
        )
        if is_staff and not is_superuser:
            user.user_permissions.set(staff_perms)
        if sessions:
            seed_sessions(owner=user, count=sessions, content_bytes=1500, prefix=username, seed=1)
        passwords[username] = password
    credentials_file.parent.mkdir(parents=True, exist_ok=True)
    credentials_file.write_text(json.dumps(passwords, indent=2))
    credentials_file.chmod(0o600)
    return passwords
