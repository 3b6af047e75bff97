"""The benchmark behind ``manage.py bulkops_bench`` (issue 6, docs/benchmarks.md).

Three ways of doing the same work are timed on fresh rows of a fresh benchmark owner:

* **engine** — ``operation_create`` (what the API and the admin call) and the real
  django-tasks-db worker (``bulkops.worker.make_worker``, on a thread of this process,
  polling at ``BULKOPS_WORKER_INTERVAL``). *Processing* is the operation's
  ``started_at → finished_at``; *end to end* is ``created_at → finished_at`` (request
  transaction, queue, worker pickup, processing, finalisation).
* **naive** and **raw** — the per-row ``save()`` loop and the raw-SQL limit
  (:mod:`bulkops.bench.references`).

Latency (API ``POST`` → ``bulk_operation_completed`` on a WebSocket) runs against
``manage.py serve`` started as a subprocess on the same database
(:mod:`bulkops.bench.latency`).

Modules: ``scenarios`` (what is run: the scenarios, the bench owner's rows, the engine
runs), ``references``, ``latency``, ``report`` (figures, targets, table, machine facts)
and ``runner`` (the whole run); ``load`` is ``--load`` (API clients and WebSocket
subscribers against 2 daphne + 2 db_worker, issue 12). Runtime code never imports this
package.
"""

from bulkops.bench.report import render_table
from bulkops.bench.runner import Bench
from bulkops.bench.scenarios import DEFAULT_BATCH_SIZES, SCENARIOS, Options, Scenario

__all__ = ["DEFAULT_BATCH_SIZES", "SCENARIOS", "Bench", "Options", "Scenario", "render_table"]
