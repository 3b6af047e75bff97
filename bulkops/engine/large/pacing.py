"""Keeping a large operation kind to everyone else: ``BULKOPS_LARGE_MAX_ROWS_PER_SECOND``
(0, the default: unlimited) caps the sessions a large operation's run processes a
second. After each committed chunk the run waits until the sessions it processed so far
are within the rate; its chunks are no larger than a target duration's worth at that
rate, so the waits stay short and a pause or cancel is still seen within about one
chunk (``BULKOPS_CHUNK_SECONDS``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from bulkops.conf import bulkops_settings


class Throttle:
    """At most ``rate`` sessions a second over a run (0: no limit)."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = max(float(rate), 0.0)
        self.clock, self.sleep = clock, sleep
        self.started = clock()
        self.rows = 0

    @classmethod
    def configured(cls) -> Throttle:
        return cls(bulkops_settings.LARGE_MAX_ROWS_PER_SECOND)

    @property
    def max_chunk(self) -> int | None:
        """The most sessions a chunk should take at this rate (None: no limit)."""
        if not self.rate:
            return None
        seconds = float(bulkops_settings.CHUNK_SECONDS) or 1.0
        return max(1, int(self.rate * seconds))

    def wait(self, rows: int) -> float:
        """A chunk of ``rows`` sessions committed: wait until the run is within the
        rate; return the seconds waited."""
        self.rows += rows
        if not self.rate:
            return 0.0
        ahead = self.rows / self.rate - (self.clock() - self.started)
        if ahead > 0:
            self.sleep(ahead)
            return ahead
        return 0.0
