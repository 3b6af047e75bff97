"""The ASGI handler for HTTP: Django's, with the middleware chain and the view run the
way WSGI runs them — synchronously, on one thread per request.

Django's own ASGI handler builds an asynchronous middleware chain. Every middleware
here and every view is synchronous, so under it a request crossed between the event
loop and its thread for each middleware hook (``MiddlewareMixin`` runs
``process_request``/``process_response`` through ``sync_to_async`` one by one), 20
crossings for a one-session POST, each a future, a wake-up and a context copy: a
large share of a small request's CPU. Here the event loop hands the whole request to its thread
once (``get_response``, the chain WSGI runs), and reading the body, sending the
response and the request signals stay Django's, as does everything the middleware
does: the same middleware, in the same order, on the same request.

Each request's thread is a kept one. Django's handler gives every request a new
thread (a ``ThreadSensitiveContext`` with an executor of its own, shut down after the
response): a thread started and joined, and a new database wrapper built in it, per
request. Here a request takes an idle single-thread executor (asgiref's
``ThreadSensitiveContext(executor=…)``), or a new one when all are busy, and gives it
back after the response, as a threaded WSGI server keeps its threads: the request still
runs alone on its thread, from ``request_started`` to ``request_finished``, which
returns its database connection to the pool as before.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

#: Idle request threads a server keeps; more run while more requests do, and end after.
MAX_IDLE_THREADS = 16


class RequestThread(ThreadPoolExecutor):
    """One request's thread, which knows whether a call it was given still runs."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="request")
        self._unfinished: set[Future] = set()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = super().submit(fn, *args, **kwargs)
        self._unfinished.add(future)
        future.add_done_callback(self._unfinished.discard)
        return future

    @property
    def idle(self) -> bool:
        return not self._unfinished


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._idle: list[RequestThread] = []

    async def __call__(self, scope, receive, send) -> None:
        thread = self._idle.pop() if self._idle else RequestThread()
        try:
            # Django's own (plain) context inside leaves this one in place.
            async with ThreadSensitiveContext(executor=thread):
                await super().__call__(scope, receive, send)
        finally:
            # A request that ended early (the client went away: Django stops waiting
            # for its view) can leave its view running: that thread ends after it,
            # instead of making the next request wait for it.
            if thread.idle and len(self._idle) < MAX_IDLE_THREADS:
                self._idle.append(thread)
            else:
                thread.shutdown(wait=False)

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        # thread_sensitive: the request's own thread (ThreadSensitiveContext, set by
        # ASGIHandler.__call__), as Django's chain runs a synchronous view.
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
