"""How ``bulk --wait`` shows an operation's progress: on a terminal one bar redrawn in
place; otherwise (a log file, a pipe, CI) a line every few seconds, so a log of a run of
hours stays readable. Both say the counts, the rate (sessions/s) and the ETA."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.core.management.base import OutputWrapper

from bulkops.models import BulkOperation
from bulkops.representations import eta_seconds, progress_percent, rate_per_second

BAR_WIDTH = 30
#: Without a terminal a progress line is written this often (and at the end).
LINE_EVERY_SECONDS = 5.0


def clock_text(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03``; ``?`` before there is an estimate."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(op: BulkOperation) -> str:
    """The bar, percentage, counts, rate and ETA of ``op`` as committed."""
    percent = progress_percent(op)
    filled = percent * BAR_WIDTH // 100
    rate = rate_per_second(op) or 0.0
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:5.1f}% "
        f"{op.processed:,}/{op.total:,}  ok {op.succeeded:,}  skipped {op.skipped:,}  "
        f"failed {op.failed:,}  {rate:,.0f} sessions/s  ETA {clock_text(eta_seconds(op))}  "
        f"{op.status:<9}"
    )


class ProgressDisplay:
    """Writes ``op``'s progress line to ``out``: redrawn on a terminal, else at most one
    every ``every`` seconds (and always the first and the last)."""

    def __init__(
        self,
        out: OutputWrapper,
        *,
        clock: Callable[[], float] = time.monotonic,
        every: float = LINE_EVERY_SECONDS,
    ) -> None:
        self.out, self.clock, self.every = out, clock, every
        self.tty = out.isatty()
        self.written_at: float | None = None

    def show(self, op: BulkOperation, *, last: bool = False) -> None:
        line = progress_line(op)
        if self.tty:
            self.out.write("\r" + line, ending="\n" if last else "")
            self.out.flush()
            return
        now = self.clock()
        if last or self.written_at is None or now - self.written_at >= self.every:
            self.out.write(line.rstrip())
            self.written_at = now
