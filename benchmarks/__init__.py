"""The benchmark of the bulk-operation engine, and scale seeding: a Django app of its own
(``manage.py bulkops_bench``, ``manage.py seed_scale``), installed only on demand
(``BULKOPS_BENCHMARKS=1``; docs/benchmarks.md). The product (``bulkops``) never imports
it; the real-process tests share its process orchestration (:mod:`benchmarks.processes`).

Three ways of doing the same work are timed on fresh rows of a fresh benchmark owner:

* **engine** — ``operation_create`` (what the API and the admin call) and the real
  django-tasks-db worker (``bulkops.worker.make_worker``, on a thread of this process,
  polling at ``BULKOPS_WORKER_INTERVAL``). *Processing* is the operation's
  ``started_at → finished_at``; *end to end* is ``created_at → finished_at`` (request
  transaction, queue, worker pickup, processing, finalisation).
* **naive** and **raw** — the per-row ``save()`` loop and the raw-SQL limit
  (:mod:`benchmarks.references`).

Modules: ``scenarios`` (the scenarios, the bench owner's rows, the engine runs),
``references``, ``report`` (figures, targets, table, machine facts) and ``runner`` (the
whole run); ``latency`` (API ``POST`` → ``bulk_operation_completed`` on a WebSocket,
against ``manage.py serve``), ``small_ops`` (``--small-ops``), ``tablesize``
(``--table-size``, on ``scaleseed``'s tables), ``load`` (``--load``); ``processes`` (every
subprocess any of them or the real-process tests start).
"""
