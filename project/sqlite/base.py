"""SQLite for the embedded default, with a first-come-first-served turn at the write
lock for the threads of one process.

SQLite lets one transaction write at a time. A transaction that finds the write lock
taken waits in SQLite's busy handler, which sleeps between tries (1, 2, 5 … then
100 ms) and keeps no queue. In the embedded default (``manage.py serve``) the server
and the worker are threads of one process, and the worker commits a chunk and begins
the next within a millisecond: a request's transaction (a pause, a cancel, a new
operation, an admin save) kept missing those gaps and waited up to 1.7 s during an
archive made of 0.25 s chunks (docs/operations.md). Here every transaction of the
process first takes its turn in one queue, in the order they asked, so a waiting
request goes before the worker's next chunk and waits at most for the chunk in
progress. Another process writing the same file (a ``db_worker`` beside the server)
still meets SQLite's own wait, as does a write outside a transaction.
"""

from __future__ import annotations

import threading
from collections import deque

from django.db.backends.sqlite3 import base


class WriteTurns:
    """A lock that threads get in the order they asked for it (handed from one
    holder to the next waiter). A waiter that gives up after ``timeout`` goes on
    without a turn: SQLite's own wait (and its error) then decide."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Event] = deque()

    def acquire(self, timeout: float) -> bool:
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            turn = threading.Event()
            self._waiters.append(turn)
        if turn.wait(timeout):
            return True
        with self._mutex:
            if turn.is_set():  # handed over just as the wait gave up
                return True
            self._waiters.remove(turn)
            return False

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()  # still held: now by the next waiter
            else:
                self._held = False


#: One queue per process (every connection of every thread).
TURNS = WriteTurns()


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's SQLite backend; an outermost ``transaction.atomic`` block waits for
    its turn before ``BEGIN`` and gives it up at ``COMMIT`` or ``ROLLBACK``."""

    _has_turn = False

    def _start_transaction_under_autocommit(self) -> None:
        timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        self._has_turn = TURNS.acquire(timeout)
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._end_turn()
            raise

    def _end_turn(self) -> None:
        if self._has_turn:
            self._has_turn = False
            TURNS.release()

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._end_turn()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._end_turn()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._end_turn()
