"""An in-process WebSocket client for the consumer tests, whose waits are ceilings.

channels' ``WebsocketCommunicator`` gives every connect, receive and disconnect one
second by default: a window a loaded runner can miss. Here each waits up to ``WAIT``
seconds — a ceiling, not a window: the awaited message ends the wait at once.
"""

from __future__ import annotations

from channels.testing import WebsocketCommunicator

#: Seconds any one message may take to arrive before the test fails.
WAIT = 30.0


class Communicator(WebsocketCommunicator):
    async def connect(self, timeout: float = WAIT):
        return await super().connect(timeout)

    async def receive_output(self, timeout: float = WAIT):
        return await super().receive_output(timeout)

    async def receive_from(self, timeout: float = WAIT):
        return await super().receive_from(timeout)

    async def receive_json_from(self, timeout: float = WAIT):
        return await super().receive_json_from(timeout)

    async def disconnect(self, code: int = 1000, timeout: float = WAIT):
        return await super().disconnect(code, timeout)
