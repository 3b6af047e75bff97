"""The WebSocket Origin check (against cross-site WebSocket hijacking).

A browser sends the session cookie with a WebSocket opened by *any* page, so only pages
of this site may open one. Unlike channels' ``AllowedHostsOriginValidator`` (host only),
an origin is the whole ``(scheme, host, port)``:

* every origin of ``CSRF_TRUSTED_ORIGINS``, read as Django's CSRF check reads it
  (``scheme://host[:port]``, or ``scheme://*.domain[:port]`` for a domain and its
  subdomains);
* the request's own origin: ``https`` when the request is secure (``wss``, or
  ``SECURE_PROXY_SSL_HEADER`` as ``HttpRequest.is_secure`` reads it), else ``http``; a
  host of ``ALLOWED_HOSTS``; the port of the request's ``Host`` header (80 or 443 when it
  has none).

No Origin (or more than one, or one that is not ``http(s)://host[:port]``) is refused:
browsers always send one, and scripts can. A refusal is a clean HTTP 403 at the
handshake, before the application (and its channel layer) is involved.
"""

from __future__ import annotations

from django.conf import settings
from django.http.request import split_domain_port, validate_host

#: (scheme, host, port), lower-cased, the port always given.
Origin = tuple[str, str, int]

DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(value: str) -> Origin | None:
    """``http(s)://host[:port]`` as an Origin; None for anything else (``null``, a path,
    credentials, another scheme, a malformed host)."""
    scheme, sep, netloc = value.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        return None
    host, port = split_domain_port(netloc)
    if not host:
        return None
    return scheme, host, int(port) if port else DEFAULT_PORTS[scheme]


def is_trusted(origin: Origin, entry: str) -> bool:
    """Whether one ``CSRF_TRUSTED_ORIGINS`` entry allows ``origin``."""
    wildcard = "://*." in entry
    allowed = parse_origin(entry.replace("://*.", "://", 1))
    if allowed is None:
        return False
    if not wildcard:
        return origin == allowed
    scheme, host, port = origin
    domain = allowed[1]
    return (scheme, port) == (allowed[0], allowed[2]) and (
        host == domain or host.endswith("." + domain)
    )


def _header(scope: dict, name: bytes) -> list[str]:
    return [value.decode("latin1") for key, value in scope.get("headers", []) if key == name]


def is_secure(scope: dict) -> bool:
    """As ``HttpRequest.is_secure``: the proxy's header when configured and present,
    else the connection's own scheme."""
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, secure_value = proxy
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin1")
        values = _header(scope, header)
        if values:
            return values[0].split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "wss"


def allowed_hosts() -> list[str]:
    """``ALLOWED_HOSTS``, with Django's DEBUG fallback when it is empty."""
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def is_same_origin(origin: Origin, scope: dict) -> bool:
    """``origin`` is this request's own: its scheme, a host we serve, the Host's port."""
    scheme = "https" if is_secure(scope) else "http"
    hosts = _header(scope, b"host")
    _, port = split_domain_port(hosts[0]) if len(hosts) == 1 else ("", "")
    expected = int(port) if port else DEFAULT_PORTS[scheme]
    return (origin[0], origin[2]) == (scheme, expected) and validate_host(
        origin[1], allowed_hosts()
    )


def origin_allowed(scope: dict) -> bool:
    """Whether the handshake's single Origin header is one of the allowed origins."""
    values = _header(scope, b"origin")
    origin = parse_origin(values[0]) if len(values) == 1 else None
    if origin is None:
        return False
    return is_same_origin(origin, scope) or any(
        is_trusted(origin, entry) for entry in settings.CSRF_TRUSTED_ORIGINS
    )


async def deny(scope: dict, receive, send) -> None:
    """Refuse the handshake: closing before accepting is an HTTP 403 to the client."""
    if (await receive())["type"] == "websocket.connect":
        await send({"type": "websocket.close"})


class OriginValidator:
    """ASGI middleware for WebSocket connections: the application only sees handshakes
    whose Origin is allowed (see the module's docstring); the others get a 403."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope: dict, receive, send):
        if scope["type"] == "websocket" and origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await deny(scope, receive, send)
