"""The one place BULKOPS_* settings are read (defaults are DESIGN.md's)."""

from pathlib import Path
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "MAX_SESSIONS_PER_OPERATION": 1000,
    "MAX_EXPORT_SESSIONS": 10_000,
    #: The most sessions one large operation (a filter past the caps above, for users
    #: with ``bulkops.run_large_operation``) may select.
    "MAX_LARGE_OPERATION_SESSIONS": 10_000_000,
    "MAX_ACTIVE_OPERATIONS_PER_USER": 5,
    "MAX_REQUEST_BYTES": 1024 * 1024,
    "MAX_WS_CONNECTIONS_PER_USER": 20,
    #: Seconds between re-checks that an open WebSocket's user is active and its token
    #: still exists (revocations announced by signals close it at once).
    "WS_RECHECK_SECONDS": 120.0,
    #: When set, /metrics needs "Authorization: Bearer <token>".
    "METRICS_TOKEN": "",
    #: The most items one chunk takes.
    "CHUNK_SIZE": 5000,
    #: How long a chunk should last: its item count follows the measured rate (the
    #: first chunk of a run takes at most 100), within CHUNK_SIZE. 0: every chunk
    #: takes CHUNK_SIZE items.
    "CHUNK_SECONDS": 0.25,
    #: Operations of at most this many sessions run in the request that starts them
    #: (``bulkops.engine.inline``); 0: every operation is queued for a worker.
    "INLINE_MAX_SESSIONS": 20,
    "OPERATION_TIMEOUT_SECONDS": 300,
    #: How many slices a large operation's selection is cut into: as many workers can
    #: run it at once (an export: one).
    "LARGE_SLICES": 4,
    #: The most sessions a large operation processes a second (0: no limit).
    "LARGE_MAX_ROWS_PER_SECOND": 0,
    #: A large run backs off when a chunk's rate falls below this fraction of the
    #: median of its recent chunks, or its rows were found locked (0: never).
    "LARGE_BACKOFF_SLOWDOWN": 0.25,
    #: Its first wait then (doubling while the pressure lasts) and the longest one.
    "LARGE_BACKOFF_SECONDS": 1.0,
    "LARGE_BACKOFF_MAX_SECONDS": 10.0,
    #: The running time (pauses left out) after which a large operation stops.
    "LARGE_OPERATION_TIMEOUT_SECONDS": 24 * 3600,
    "EXPORT_RETENTION_SECONDS": 24 * 3600,
    "OPERATION_RETENTION_DAYS": 30,
    "IDEMPOTENCY_TTL_SECONDS": 24 * 3600,
    #: How long after it finished an operation may be undone (POST …/undo).
    "UNDO_WINDOW_SECONDS": 7 * 24 * 3600,
    "STALE_AFTER_SECONDS": 60,
    #: How long validate's ``selection_token`` is accepted by an action.
    "SELECTION_TOKEN_MAX_AGE_SECONDS": 3600,
    #: Longest a chunk waits for a session row another transaction holds (PostgreSQL).
    "LOCK_TIMEOUT": 5.0,
    "MAX_ATTEMPTS": 3,
    "ARCHIVE_ZSTD_LEVEL": 3,
    "EXPORT_DIR": Path("var/exports"),
    "WORKER_INTERVAL": 0.1,
    #: Who may read /api/schema/ and /api/docs/: "public" or "staff" (settings.py's
    #: default: "public" with DEBUG on, "staff" with DEBUG off).
    "API_DOCS": "staff",
    #: Overrides of the per-scope rates (defaults: bulkops.ratelimits.rates()).
    "RATE_LIMITS": {},
}


class _BulkopsSettings:
    """``bulkops_settings.CHUNK_SIZE`` reads ``settings.BULKOPS_CHUNK_SIZE`` on each access,
    so ``override_settings`` in tests takes effect."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"unknown bulkops setting {name}")
        return getattr(settings, f"BULKOPS_{name}", DEFAULTS[name])


bulkops_settings = _BulkopsSettings()
