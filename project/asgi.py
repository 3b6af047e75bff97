"""ASGI entry point: HTTP through Django, WebSockets through Channels (/ws/bulk/)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

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
