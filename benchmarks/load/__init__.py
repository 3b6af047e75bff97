"""``manage.py bulkops_bench --load``: the production layout on one machine — 2 daphne
servers and 2 ``db_worker`` processes on a PostgreSQL database of the run's own and
Redis (a key prefix of its own) — under N concurrent API clients and M WebSocket
subscribers, all on 127.0.0.1:

* users with a token and sessions are seeded; subscribers are spread over the users
  (at most ``SUBSCRIBERS_PER_USER`` each, under ``BULKOPS_MAX_WS_CONNECTIONS_PER_USER``)
  and all authenticated (first-message token) before any traffic;
* each client loops for ``duration`` seconds, as one user, without think time: validate,
  ``GET /api/sessions/``, status polls of its user's operations, and small actions
  (close/archive/delete/restore of 1–5 sessions, some with an ``Idempotency-Key``, some
  of those replayed, and now and then a cancel), with the product's default rate limits;
  every ``BURST_EVERY``-th client hammers its user's actions, so 429s are expected (each
  must carry ``Retry-After``);
* then every operation in the database must finish, and every subscriber must have
  received the final event (completed/failed/cancelled) of every operation of its user.

Modules: ``world`` (database, Redis prefix, seed, processes), ``clients`` (API clients on
``aiohttp``, WebSocket subscribers on ``websockets``, what they saw), ``workload`` (the
run) and ``report``. Everything is bounded in count and time, and the processes are
ended and the database dropped even on Ctrl-C or an error.
"""

from benchmarks.load.report import render_load
from benchmarks.load.workload import LoadBench
from benchmarks.load.world import LoadOptions

__all__ = ["LoadBench", "LoadOptions", "render_load"]
