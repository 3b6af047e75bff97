"""Small operations run inside the request that starts them.

An operation of at most ``BULKOPS_INLINE_MAX_SESSIONS`` sessions is run to its end in
the transaction that creates it, instead of being queued: no queue row, no wake-up,
no worker pick-up, and the answer to the request (the API's 202, the admin's
redirect, the ``bulk`` command's line) already carries the final status. It is the
same operation a worker would run — the same rows, items, outcomes, chunk statements
and rules (the rate limit, the active cap, idempotency and the drift token are
checked before, under the user's lock) — and its events (started, progress,
completed) go out once the request's transaction has committed, never before.

The run is short because nobody else can see the operation until that commit: no
worker can claim it, no cancel or pause can reach it, so the claim (the row's lock
and ``running`` update), the re-reads of its status between chunks and each chunk's
savepoint are left out; and nothing needs to be written before it is known. Each
chunk's items are inserted after the chunk with their outcomes, and the operation's
row once, at the end, finished (its counters and status kept in memory until then):
no pending row is written to be updated a moment later (a one-session close is 10
statements, where the worker's path took 25: ``tests/engine/test_inline_statements.py``
counts them).

What runs inline, and what does not:

* an **atomic** operation does (its one transaction is the request's), through the
  worker's own path (``operation_execute``);
* an **undo** or a **retry** does (they are operations like any other);
* an **export** does not: it writes a file, which belongs to a worker (a file written
  by a request whose transaction then rolls back would outlive its operation);
* an operation whose inline run hits a database error (a deadlock, a serialisation
  failure, a session row held past ``BULKOPS_LOCK_TIMEOUT``) is not lost: the run is
  rolled back to before it started and the operation is queued as usual; a worker
  then runs it (and fails rows still held ``locked``).
"""

from __future__ import annotations

import logging
import time

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from bulkops import events
from bulkops.actions import get_action
from bulkops.conf import bulkops_settings
from bulkops.engine.chunks import ChunkSizer, apply_chunk
from bulkops.engine.executor import FINAL_EVENTS, Publisher, operation_execute
from bulkops.engine.outcomes import create_items, create_items_with_outcomes, final_status
from bulkops.engine.queue import enqueue_operation
from bulkops.engine.stopping import Stop, conclude, over_threshold
from bulkops.models import BulkOperation, OperationStatus
from bulkops.selectors import sessions_in_scope_by_id

logger = logging.getLogger("bulkops.engine")


def runs_inline(op: BulkOperation, act) -> bool:
    """Whether ``op`` (its ``total`` counted) runs in the request that starts it."""
    return 0 < op.total <= bulkops_settings.INLINE_MAX_SESSIONS and not act.produces_file


def operation_run_inline(*, operation: BulkOperation, session_ids: list[str]) -> BulkOperation:
    """Run ``operation`` (created but not yet written: its row and one item per id of
    ``session_ids`` are written here, as they end) to its end in the caller's
    transaction, its events held until that transaction commits; return it finished.
    On a database error the run is rolled back (a savepoint) and the operation is
    written as a queued one is (pending, one pending item per id) and queued."""
    created = {
        f.attname: getattr(operation, f.attname) for f in BulkOperation._meta.concrete_fields
    }
    try:
        if not operation.params.get("atomic"):
            try:
                with events.after_commit(), transaction.atomic():
                    return _run(operation, sorted(session_ids))
            except DatabaseError:
                raise
            except Exception:
                # A hook's error: nothing of this run stays (the savepoint), and the
                # worker's path runs it again to end it as it ends any run that fails.
                logger.info("operation %s: the inline run raised; ending it as a worker does",
                            operation.pk, exc_info=True)  # fmt: skip
        with events.after_commit(), transaction.atomic():
            _write_created(operation, created, session_ids)
            done = operation_execute(operation_id=operation.pk)
            _durable_commit()
            return done
    except DatabaseError:
        logger.warning("operation %s: the inline run failed; queued instead", operation.pk,
                       exc_info=True)  # fmt: skip
        _write_created(operation, created, session_ids)
        enqueue_operation(operation.pk)
        return operation


def _write_created(op: BulkOperation, created: dict, ids: list[str]) -> None:
    """Write ``op`` as it was created (``created``: its fields then, whatever a run
    rolled back left on it) with one pending item per id: what a queued operation is."""
    vars(op).update(created)
    op.save(force_insert=True)
    create_items(op, ids)


def _run(op: BulkOperation, ids: list[str]) -> BulkOperation:
    """The run of a plain (not atomic) operation nobody else sees yet: its chunks over
    ``ids`` (in id order, as a worker takes them), each chunk's items written after
    it with their outcomes (never pending first), the counters kept on ``op`` and
    written with the final status."""
    act = get_action(op.action)(user=op.user, params=op.params)
    scope = sessions_in_scope_by_id(user=op.user, action=act)
    now = timezone.now()
    # What a worker's claim writes, kept on ``op`` until its row is written, at the end.
    vars(op).update(status=OperationStatus.RUNNING, attempts=1, started_at=now,
                    heartbeat_at=now, version=op.version + 1)  # fmt: skip
    events.publish_operation(op, "bulk_operation_started")
    act.begin(op)
    publisher, sizer = Publisher(op, act), ChunkSizer()
    while ids:
        started, now = time.monotonic(), timezone.now()
        chunk, ids = ids[: sizer.size], ids[sizer.size :]
        part = apply_chunk(op, act, scope, ids=chunk, now=now, checkpoint=False)
        part.last, part.last_id = not ids, chunk[-1]
        create_items_with_outcomes(op, part)
        _count(op, part, now)
        publisher.chunk(part)
        if over_threshold(op, op.failed):
            # A rare ending: the row is written as ``op`` holds it and the ids not
            # reached get their (pending) items, then it ends as a worker's would.
            op.save(force_insert=True)
            create_items(op, ids)
            conclude(op, act, Stop.FAILURE_THRESHOLD)
            break
        sizer.measured(items=part.processed, seconds=time.monotonic() - started)
    else:
        act.finish(op)
        now = timezone.now()
        vars(op).update(status=final_status(op), finished_at=now, heartbeat_at=now,
                        version=op.version + 1)  # fmt: skip
        # Nobody else could have written the row before the request commits (nobody
        # sees it yet): it is written once, finished, and not read back.
        op.save(force_insert=True)
    events.publish_operation(op, FINAL_EVENTS[op.status])
    return op


def _count(op: BulkOperation, part, now) -> None:
    """Add the chunk's outcomes to the counters on ``op``, as a worker's chunk adds
    them to the row (``outcomes.record_counters``), and bump its version."""
    op.processed += part.processed
    op.succeeded += len(part.eligible)
    op.skipped += part.skipped_count
    op.failed += part.failed_count
    op.version += 1
    op.heartbeat_at = now


def _durable_commit() -> None:
    """The engine's chunks commit without waiting for the WAL flush (a chunk is a
    checkpoint; the final commit waits). Here the chunk's transaction is the request's,
    whose answer says the operation finished: that commit waits again."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO DEFAULT")
