"""Shared fixtures: factories for users and sessions, settings isolation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.cache import cache

from bulkops.engine.chunks import forget_rates
from bulkops.models import Session, SessionExport, SessionStatus

#: The service markers' rule: a postgres/redis/browser test this pass has the service for
#: must run (a skip fails the run in CI); one it has not is skipped and counted.
pytest_plugins = ["bulkops.tests.support.services"]


@pytest.fixture(autouse=True)
def _isolated_exports_and_counters(tmp_path, settings):
    settings.BULKOPS_EXPORT_DIR = tmp_path / "exports"
    # Every operation is queued, as a large one is: most tests watch a worker run it,
    # or act on it while it is pending. The inline run of small operations (the
    # default, 20) has tests of its own (engine/test_inline.py), which turn it on.
    settings.BULKOPS_INLINE_MAX_SESSIONS = 0
    # Every run starts from the same first chunk, whatever ran in this process before.
    forget_rates()
    _clear_cache()
    yield
    _clear_cache()


@pytest.fixture
def world(tmp_path):
    """The real-process tests' (integration/) ``world(postgres=…, redis=…, **env)``
    → (database, processes), torn down after the test: see ``support.processes.worlds``.
    (api/test_actions.py and engine/test_cleanup.py define a ``world`` fixture of their own.)"""
    from bulkops.tests.support.processes import worlds  # after the plugin below is loaded

    yield from worlds(tmp_path)


def _clear_cache() -> None:
    """Forget rate-limit counters. On Redis, only this deployment's keys (KEY_PREFIX):
    django-redis' clear() would FLUSHDB a database others may share."""
    try:
        if hasattr(cache, "delete_pattern"):
            cache.delete_pattern("*")
        else:
            cache.clear()
    except Exception:
        pass  # a test pointed the cache at a Redis that is not there (test_without_redis)


@pytest.fixture
def make_user(db) -> Callable[..., object]:
    User = get_user_model()
    counter = {"n": 0}

    def factory(
        username: str | None = None,
        *,
        staff: bool = False,
        superuser: bool = False,
        perms: tuple[str, ...] = (),
    ):
        counter["n"] += 1
        user = User.objects.create_user(
            username=username or f"user{counter['n']}",
            password="pw-for-tests-1",
            is_staff=staff or superuser,
            is_superuser=superuser,
        )
        for perm in perms:
            app_label, codename = perm.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        # has_perm caches permissions on the instance: hand out a fresh one.
        return User.objects.get(pk=user.pk)

    return factory


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def stranger(make_user):
    return make_user("stranger")


@pytest.fixture
def make_session(db) -> Callable[..., Session]:
    counter = {"n": 0}

    def factory(
        owner,
        *,
        id: str | None = None,
        status: str = SessionStatus.ACTIVE,
        deleted: bool = False,
        content: str = "hello",
        exports: int = 0,
        title: str | None = None,
        **extra,
    ) -> Session:
        counter["n"] += 1
        from django.utils import timezone

        session = Session.objects.create(
            id=id or f"s-{counter['n']:05d}",
            owner=owner,
            title=title if title is not None else f"Session {counter['n']}",
            status=status,
            content=content,
            deleted_at=timezone.now() if deleted else None,
            **extra,
        )
        for _ in range(exports):
            SessionExport.objects.create(session=session, format="csv", file="x.csv", size=1)
        return session

    return factory
