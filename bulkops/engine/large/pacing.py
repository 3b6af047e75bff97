"""Keeping a large operation kind to everyone else.

- **Throttle.** ``BULKOPS_LARGE_MAX_ROWS_PER_SECOND`` (0, the default: unlimited) caps
  the sessions a large operation's run processes a second. After each committed chunk
  the run waits until the sessions it processed so far are within the rate; its chunks
  are no larger than a target duration's worth at that rate, so the waits stay short
  and a pause or cancel is still seen within about one chunk (``BULKOPS_CHUNK_SECONDS``).
- **Back-off.** The database's own pressure, measured as batched background
  migrations measure it: each committed chunk's rate (sessions a second) is compared
  with the median of the run's recent chunks. A chunk slower than
  ``BULKOPS_LARGE_BACKOFF_SLOWDOWN`` (0.25) of that median — and longer than 4× (its
  inverse) the median chunk, so that a small chunk's fixed costs do not count: it
  waited on locks, or the database is busy — or one whose rows were found locked by
  others, makes the run wait
  ``BULKOPS_LARGE_BACKOFF_SECONDS`` (1 s; doubled while the pressure lasts, at most
  ``BULKOPS_LARGE_BACKOFF_MAX_SECONDS``, 10 s) and halves the chunks that follow; each
  chunk at normal speed doubles them back. Slow chunks count toward the median too: a
  lasting change of pace (costlier sessions further on) stops being pressure after a
  few chunks instead of slowing the run for good.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
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


#: The chunks whose rates the median is taken over, and how many before it is trusted.
RECENT_CHUNKS = 21
MIN_CHUNKS = 3


class BackOff:
    """Wait and shrink the chunks when the run's chunks slow down sharply or meet locks."""

    def __init__(
        self,
        *,
        slowdown: float,
        pause: float,
        longest: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.slowdown, self.pause, self.longest = float(slowdown), float(pause), float(longest)
        self.clock, self.sleep = clock, sleep
        self.rates: deque[float] = deque(maxlen=RECENT_CHUNKS)
        self.durations: deque[float] = deque(maxlen=RECENT_CHUNKS)
        #: The most sessions the next chunk takes (None: as the chunk sizer says).
        self.limit: int | None = None
        self.streak = 0  # consecutive chunks under pressure
        self.waited = 0.0

    @classmethod
    def configured(cls) -> BackOff:
        return cls(
            slowdown=bulkops_settings.LARGE_BACKOFF_SLOWDOWN,
            pause=bulkops_settings.LARGE_BACKOFF_SECONDS,
            longest=bulkops_settings.LARGE_BACKOFF_MAX_SECONDS,
        )

    def size(self, proposed: int) -> int:
        """The next chunk's size: ``proposed`` (the sizer's), within the back-off's limit
        (which goes once it has grown back to what the sizer proposes)."""
        if self.limit is not None and self.limit >= proposed:
            self.limit = None
        return proposed if self.limit is None else max(1, self.limit)

    def under_pressure(self, rows: int, seconds: float, *, locked: bool) -> bool:
        """Locked rows; or a chunk that took more than ``1 / slowdown`` times what
        the median rate gives for its rows *and* than the median chunk lasted. The
        second test keeps a small chunk — slow per session, as a chunk's fixed costs
        weigh more — from reading as pressure: else halving the chunks would look like
        more pressure, and halve them again."""
        if locked:
            return True
        if len(self.rates) < MIN_CHUNKS:
            return False
        expected = max(rows / statistics.median(self.rates), statistics.median(self.durations))
        return seconds * self.slowdown > expected

    def measured(self, *, rows: int, seconds: float, locked: bool = False) -> float:
        """A chunk of ``rows`` sessions committed in ``seconds`` (``locked``: some of its
        rows were held by other transactions). Under pressure: wait, and halve the
        next chunks; else let them grow back. Return the seconds waited."""
        if not self.slowdown or rows <= 0:
            return 0.0
        seconds = max(seconds, 1e-6)
        pressure = self.under_pressure(rows, seconds, locked=locked)
        self.rates.append(rows / seconds)
        self.durations.append(seconds)
        if not pressure:
            self.streak = 0
            if self.limit is not None:
                self.limit *= 2
            return 0.0
        self.streak += 1
        self.limit = max(1, min(rows, self.limit or rows) // 2)
        wait = min(self.pause * 2 ** (self.streak - 1), self.longest)
        if wait > 0:
            self.sleep(wait)
            self.waited += wait
        return wait
