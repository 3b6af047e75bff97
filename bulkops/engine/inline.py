"""Small operations run inside the request that starts them.

An operation of at most ``BULKOPS_INLINE_MAX_SESSIONS`` sessions is run to its end by
``operation_execute`` in the transaction that creates it, instead of being queued: no
queue row, no wake-up, no worker pick-up, and the answer to the request (the API's
202, the admin's redirect, the ``bulk`` command's line) already carries the final
status. It is the same operation a worker would run — the same rows, items,
outcomes, chunk statements and rules (the rate limit, the active cap, idempotency and
the drift token are checked before, under the user's lock) — and its events go out
once the request's transaction has committed, never before.

What runs inline, and what does not:

* an **atomic** operation does (its one transaction is the request's);
* an **undo** or a **retry** does (they are operations like any other);
* an **export** does not: it writes a file, which belongs to a worker (a file written
  by a request whose transaction then rolls back would outlive its operation);
* an operation whose inline run hits a database error (a deadlock, a serialisation
  failure) is not lost: the run is rolled back to before it started and the
  operation is queued as usual.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db import DatabaseError, connection, transaction

from bulkops import events
from bulkops.conf import bulkops_settings
from bulkops.engine.executor import operation_execute
from bulkops.engine.queue import enqueue_operation

if TYPE_CHECKING:
    from bulkops.actions.base import BulkAction
    from bulkops.models import BulkOperation

logger = logging.getLogger("bulkops.engine")


def runs_inline(op: BulkOperation, act: BulkAction) -> bool:
    """Whether ``op`` (its ``total`` counted) runs in the request that starts it."""
    return 0 < op.total <= bulkops_settings.INLINE_MAX_SESSIONS and not act.produces_file


def operation_run_inline(*, operation: BulkOperation) -> BulkOperation:
    """Run ``operation`` (just created, in the caller's transaction) to its end in that
    transaction, its events held until the transaction commits; return it finished.
    On a database error the run is rolled back (a savepoint) and the operation queued."""
    try:
        with events.after_commit(), transaction.atomic():
            done = operation_execute(operation_id=operation.pk)
    except DatabaseError:
        logger.warning("operation %s: the inline run failed; queued instead", operation.pk,
                       exc_info=True)  # fmt: skip
        enqueue_operation(operation.pk)
        return operation
    _durable_commit()
    return done


def _durable_commit() -> None:
    """The engine's chunks commit without waiting for the WAL flush (a chunk is a
    checkpoint; the final commit waits). Here the chunk's transaction is the request's,
    whose answer says the operation finished: that commit waits again."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO DEFAULT")
