"""Idempotent starts: a request carrying an ``Idempotency-Key`` that already started an
operation gets that operation back (``replayed``) instead of a second one.

The key is kept per user for ``BULKOPS_IDEMPOTENCY_TTL_SECONDS``; the same key with a
different request (another fingerprint) is refused, so a client cannot mistake another
request's operation for its own.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from bulkops.conf import bulkops_settings
from bulkops.exceptions import IdempotencyConflict
from bulkops.models import BulkOperation

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def request_fingerprint(*, action: str, payload: Any) -> str:
    """A stable hash of what was asked, to tell an idempotent replay from a new request."""
    canonical = json.dumps([action, payload], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Started:
    """What a request to start an operation got: the operation, and whether an earlier
    request with the same idempotency key had started it (``replayed``: nothing was
    created, checked or counted this time)."""

    operation: BulkOperation
    replayed: bool


def operation_replay(
    *, user: AbstractBaseUser, idempotency_key: str, fingerprint: str
) -> BulkOperation | None:
    """Return the operation this key already started (within the retention window), or
    None; raise IdempotencyConflict when the key was used for a different request."""
    horizon = timezone.now() - datetime.timedelta(seconds=bulkops_settings.IDEMPOTENCY_TTL_SECONDS)
    existing = BulkOperation.objects.filter(user=user, idempotency_key=idempotency_key).first()
    if existing is None:
        return None
    if existing.created_at < horizon:
        # Expired: the key is free again.
        BulkOperation.objects.filter(pk=existing.pk).update(idempotency_key=None)
        return None
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used with a different request body."
        )
    return existing


def replayed(user: AbstractBaseUser, key: str | None, fingerprint: str) -> Started | None:
    """The ``Started`` of the operation ``key`` already started, or None (no key, no
    such operation)."""
    existing = key and operation_replay(user=user, idempotency_key=key, fingerprint=fingerprint)
    return Started(existing, replayed=True) if existing else None
