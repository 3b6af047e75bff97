"""The WebSocket interface: the consumer (authenticate, authorise, relay) and its routes."""
