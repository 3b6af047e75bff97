"""WebSocket routes (see bulkops.consumers)."""

websocket_urlpatterns: list = []
