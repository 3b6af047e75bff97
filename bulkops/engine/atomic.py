"""All-or-nothing operations (``atomic: true``): every chunk is a
savepoint of one transaction, so either every item succeeds or is skipped, or nothing
changes.

The chunks are time-boxed as a plain operation's are, and between them the run reads
its operation's row: a cancel (or the timeout, or a worker shutting down) rolls the
whole transaction back at the next chunk boundary. For the cancel to get in, the
transaction never writes the operation's row until its very end, and holds it only
``FOR KEY SHARE`` (PostgreSQL): that lets the cancel's ``FOR NO KEY UPDATE`` and its
``UPDATE`` through, while the reaper (``FOR UPDATE SKIP LOCKED``) passes the live
operation by and a second claim (``FOR UPDATE``) waits. So the row's counters and
heartbeat stand still while the transaction runs (its items' outcomes are not
committed either): an all-or-nothing operation shows no progress until it ends, then
all of it at once.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from bulkops.actions.base import BulkAction
from bulkops.actions.sql import is_postgresql
from bulkops.engine.chunks import ChunkSizer, in_chunk_transaction, rate_key, run_chunk
from bulkops.engine.outcomes import record_atomic_rollback, record_counters, record_items
from bulkops.engine.stopping import STOP_FIELDS, Stop, stop_reason
from bulkops.models import BulkOperation, Session


class AtomicRollback(Exception):
    """Raised inside an all-or-nothing operation to undo every chunk."""

    def __init__(self, failures: dict[str, list[str]]) -> None:
        super().__init__("atomic operation rolled back")
        self.failures = failures


class _Stopped(Exception):
    """Raised between an all-or-nothing operation's chunks to undo every chunk."""

    def __init__(self, stop: Stop) -> None:
        super().__init__(stop.value)
        self.stop = stop


def _hold(op: BulkOperation) -> dict:
    """The row's ``STOP_FIELDS``, read holding the row ``FOR KEY SHARE`` until the
    transaction ends (PostgreSQL; SQLite has no row locks)."""
    rows = BulkOperation.objects.filter(pk=op.pk).only(*STOP_FIELDS)
    sql, params = rows.query.sql_with_params()
    lock = " FOR KEY SHARE" if is_postgresql() else ""
    row = next(iter(BulkOperation.objects.raw(sql + lock, params)))
    return {name: getattr(row, name) for name in STOP_FIELDS}


def execute_atomic(
    op: BulkOperation,
    act: BulkAction,
    scope: QuerySet[Session],
    should_stop: Callable[[], bool] | None,
) -> Stop | None:
    """Every chunk in one transaction. Return None when it committed; ``ROLLED_BACK``
    when an item failed (the culprits keep their reason, every other item fails
    ``atomic_rollback``); or the stop (cancel, timeout, shutdown) that rolled it back
    between chunks, its items all pending again for ``conclude`` (or the next worker)."""
    failures: dict[str, list[str]] = defaultdict(list)
    counts = {"succeeded": 0, "skipped": 0, "failed": 0}
    sizer = ChunkSizer(key=rate_key(act))
    after = ""
    try:
        with transaction.atomic():
            fresh: dict | None = _hold(op)
            while True:
                stop = stop_reason(op, should_stop, fresh=fresh)
                if stop:
                    raise _Stopped(stop)
                started, now = time.monotonic(), timezone.now()
                chunk = partial(run_chunk, op, act, scope, size=sizer.size, now=now, after=after)
                part = in_chunk_transaction(op, lambda skip, chunk=chunk: chunk(skip_locked=skip))
                if part is None:
                    break
                record_items(op, part)
                for reason, ids in part.failed.items():
                    failures[reason].extend(ids)
                counts["succeeded"] += len(part.eligible)
                counts["skipped"] += part.skipped_count
                counts["failed"] += part.failed_count
                if part.last:
                    break
                after, fresh = part.last_id, None
                sizer.measured(items=part.processed, seconds=time.monotonic() - started)
            if failures:
                raise AtomicRollback(failures)
            # The only write of the row in this transaction, unless a cancel came in
            # during the last chunk: then it rolls back as at any other boundary.
            if not record_counters(op, now=timezone.now(), unless_cancelled=True, **counts):
                raise _Stopped(Stop.CANCELLED)
    except AtomicRollback:
        with transaction.atomic():
            op.error = record_atomic_rollback(op, failures)
        return Stop.ROLLED_BACK
    except _Stopped as stopped:
        return stopped.stop
    return None
