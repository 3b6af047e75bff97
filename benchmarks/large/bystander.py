"""Another user while a large operation runs: a non-staff user listing their own
sessions (``GET /api/sessions/``, its first ``PAGES`` pages of ``PAGE_SIZE`` in turn,
token auth, one keep-alive connection) in a loop on a thread, each request timed from
send to the whole answer read, ``PAUSE`` seconds between them (a person or a script
polling, not a flood that would itself take a core from the workers)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from benchmarks.report import percentile, rounded

#: Seconds between one answer and the next request.
PAUSE = 0.1
PAGE_SIZE = 50
#: At most this many pages in turn (those that exist).
PAGES = 3
#: Seconds one request may take.
REQUEST_TIMEOUT = 30.0


class Bystander:
    """``start()`` the loop; ``stop()`` ends it after the request in flight (so at least
    one is always made) and returns what it saw."""

    def __init__(self, base: str, token: str, *, sessions: int) -> None:
        self.base = base
        self.token = token
        self.pages = max(1, min(PAGES, -(-sessions // PAGE_SIZE)))
        self.samples: list[float] = []
        self.statuses: Counter = Counter()
        self.errors: Counter = Counter()
        #: The ``count`` each answer gave (the bystander's own sessions only).
        self.counts: set[int] = set()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="bystander", daemon=True)

    def start(self) -> Bystander:
        self.thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self.stopped.set()
        self.thread.join(REQUEST_TIMEOUT + 5)
        return self.summary()

    def _loop(self) -> None:
        import requests

        http = requests.Session()
        http.headers.update(Authorization=f"Token {self.token}", Accept="application/json")
        n = 0
        try:
            while True:
                self._one(http, page=n % self.pages + 1)
                n += 1
                if self.stopped.wait(PAUSE):
                    return
        finally:
            http.close()

    def _one(self, http, *, page: int) -> None:
        import requests

        started = time.perf_counter()
        try:
            url = f"{self.base}/api/sessions/?page={page}&page_size={PAGE_SIZE}"
            response = http.get(url, timeout=REQUEST_TIMEOUT)
            body = response.json() if response.status_code == 200 else {}
        except (requests.RequestException, ValueError) as exc:
            self.errors[type(exc).__name__] += 1
            return
        self.samples.append((time.perf_counter() - started) * 1000)
        self.statuses[response.status_code] += 1
        if "count" in body:
            self.counts.add(body["count"])

    def summary(self) -> dict[str, Any]:
        samples = self.samples
        return {
            "requests": len(samples) + sum(self.errors.values()),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "counts_seen": sorted(self.counts),
            "pause_seconds": PAUSE,
            "p50_ms": rounded(percentile(samples, 50)),
            "p95_ms": rounded(percentile(samples, 95)),
            "p99_ms": rounded(percentile(samples, 99)),
            "max_ms": rounded(max(samples)) if samples else None,
        }


def bystander_for(base: str, token: str, *, sessions: int, seconds: float) -> dict[str, Any]:
    """The bystander alone for ``seconds`` (nothing else running): its baseline."""
    bystander = Bystander(base, token, sessions=sessions).start()
    try:
        time.sleep(seconds)
    finally:
        summary = bystander.stop()
    return summary
