"""ASGI entry point: HTTP through Django, WebSockets through Channels (/ws/bulk/)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# What django.core.asgi.get_asgi_application does, with the handler that runs the
# middleware chain on one thread per request (project.handlers).
django.setup(set_prefix=False)

from project.handlers import SyncChainASGIHandler

django_asgi_app = SyncChainASGIHandler()


def _static_files_collected() -> None:
    """With DEBUG off the admin's pages name hashed static files that exist only after
    ``collectstatic``: without them every admin page is a 500. Refuse to start instead,
    saying what to run (``manage.py serve`` runs it itself before importing this)."""
    from django.conf import settings
    from django.contrib.staticfiles.storage import staticfiles_storage
    from django.core.exceptions import ImproperlyConfigured

    manifest = getattr(staticfiles_storage, "manifest_name", None)
    if settings.DEBUG or manifest is None or staticfiles_storage.exists(manifest):
        return
    raise ImproperlyConfigured(
        f"DEBUG is off and {settings.STATIC_ROOT}/{manifest} is missing: run "
        "'python manage.py collectstatic --no-input' (once per release) before starting "
        "the server."
    )


def _reason_phrases() -> None:
    """daphne answers through Twisted, whose table of reason phrases predates RFC 6585:
    a 422 or a 429 would go out as ``HTTP/1.1 429 Unknown Status``. Add the phrase of
    every status Python's ``http.HTTPStatus`` knows and Twisted does not (its own stay)."""
    from http import HTTPStatus

    from twisted.web.http import RESPONSES

    for status in HTTPStatus:
        RESPONSES.setdefault(status.value, status.phrase.encode("ascii"))


_static_files_collected()
_reason_phrases()

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter

from bulkops.realtime.origin import OriginValidator
from bulkops.realtime.routing import websocket_urlpatterns

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # A foreign Origin (scheme, host and port) is refused with a 403 before the
        # consumer runs (cross-site WebSocket hijacking); the consumer itself refuses
        # anonymous users.
        "websocket": OriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
