"""The Content-Security-Policy middleware: django-csp's, plus this host's WebSocket.

The policy itself is data (``CONTENT_SECURITY_POLICY`` in settings). The one source it
cannot name is the WebSocket of the host the page came from: CSP Level 3 lets ``'self'``
match ``ws:``/``wss:`` on the same host (Chromium and Firefox do, Safari since 16), older
browsers do not, so ``connect-src`` also gets ``ws://<host>`` (``wss://`` over HTTPS)
for the request's own, already validated, host.
"""

from __future__ import annotations

from csp.middleware import CSPMiddleware as BaseCSPMiddleware
from csp.middleware import PolicyParts
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase


class CSPMiddleware(BaseCSPMiddleware):
    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        """django-csp's parts, with ``connect-src`` extended by the page's WebSocket
        origin (nothing is added for a host ALLOWED_HOSTS refuses)."""
        parts = super().get_policy_parts(request, response, report_only)
        try:
            host = request.get_host()
        except DisallowedHost:
            return parts
        websocket = f"{'wss' if request.is_secure() else 'ws'}://{host}"
        update = dict(parts.update or {})
        update["connect-src"] = [*update.get("connect-src", ()), websocket]
        parts.update = update
        return parts
