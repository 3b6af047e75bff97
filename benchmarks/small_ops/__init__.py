"""Many small operations: operations per second end to end, POST →
``bulk_operation_completed`` latency, and the engine's fixed cost per operation.

Two parts:

* **end to end** — ``manage.py serve --no-worker`` (daphne: API and WebSocket) and 1 or 2
  ``manage.py db_worker`` processes, started as subprocesses on the bench's database (and
  Redis when ``REDIS_URL`` is set: events cross processes through it). For each size
  (sessions per operation) and worker count: *latency* — operations one at a time, POST
  sent → that operation's ``bulk_operation_completed`` received on a WebSocket (p50/p99),
  split into phases by the rows' own timestamps; *throughput* — ``concurrency`` clients
  each POSTing the next operation as soon as the previous one's completed event arrives,
  operations/s = operations / (first POST → last completed event).
* **in process** — the same one-session operation created and executed in this process
  (``operation_create`` then ``operation_execute``), each phase timed (exclusive of the
  phases inside it) and its SQL statements counted: create, enqueue, start, stop checks,
  chunk, finalise, events.
"""

from benchmarks.small_ops.bench import SmallOpsBench, SmallOpsOptions, render_small_ops
from benchmarks.small_ops.in_process import IN_PROCESS_PHASES, in_process_breakdown

__all__ = [
    "IN_PROCESS_PHASES",
    "SmallOpsBench",
    "SmallOpsOptions",
    "in_process_breakdown",
    "render_small_ops",
]
