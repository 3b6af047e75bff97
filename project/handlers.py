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
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase


class SyncChainASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        # thread_sensitive: the request's own thread (ThreadSensitiveContext, set by
        # ASGIHandler.__call__), as Django's chain runs a synchronous view.
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
