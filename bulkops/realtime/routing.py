"""WebSocket routes (see bulkops.realtime.consumers); every other path is closed 4404."""

from django.urls import path, re_path

from bulkops.realtime.consumers import BulkOperationsConsumer, unknown_path

websocket_urlpatterns = [
    path("ws/bulk/", BulkOperationsConsumer.as_asgi()),
    # The user's primary key, also written ``user-<pk>``; anything else is refused 4403.
    re_path(r"^ws/bulk/(?P<user_ref>[^/]{1,64})/$", BulkOperationsConsumer.as_asgi()),
    # Last: anything else (``/ws/bulk`` without its slash, ``/ws/nope``…).
    re_path(r"", unknown_path),
]
