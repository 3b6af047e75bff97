"""``bulkops_bench --large 100k|1m|10m``: one large operation's figures at a size on the
configured PostgreSQL database, seeded once to that size (``benchmarks.scaleseed``) and
kept — use a database of your own. Two ways of running it:

* in this process (the default; ``in_process``): a close, its undo and an export, each
  run to its end by one worker in this process, its slices one after the other; the
  operation data stored per million sessions;
* with real processes (``--large-workers N``; ``workers``): daphne and N ``db_worker``
  processes, everything asked over HTTP — validate, the POST, a close and an archive (2
  KB sessions) run by the workers while another user lists their sessions (its latency),
  and an export.

Modules: ``table`` (the seed, the users, the raw ``UPDATE`` reference, the archive's
contents and putting the seed back), ``in_process``, ``workers``, ``bystander`` (the
other user) and ``report`` (the text of the run with processes).
"""

from benchmarks.large.in_process import LargeBench, render_large
from benchmarks.large.report import render_large_workers
from benchmarks.large.table import LARGE_SIZES
from benchmarks.large.workers import LargeWorkersBench

__all__ = ["LARGE_SIZES", "LargeBench", "LargeWorkersBench", "render_large", "render_large_workers"]
