"""What a call needs of its WebSocket: :class:`MediaSocket`.

The front door's :class:`~engine.transport.websocket.MediaWebSocket` is one; tests and other
transports may bring their own.
"""

from __future__ import annotations

from typing import Protocol

from engine.errors import CLOSE_NORMAL

__all__ = ["MediaSocket"]


class MediaSocket(Protocol):
    """An accepted WebSocket carrying one Media Stream.

    ``receive`` and ``send_many`` raise :class:`~engine.errors.ConnectionClosed` once the peer
    is gone; ``receive`` raises :class:`~engine.errors.ProtocolError` (e.g.
    :class:`~engine.errors.MessageTooBig`) after closing the socket for a message it refused.
    """

    async def receive(self) -> str | bytes:
        """The next message."""
        ...

    async def send_many(self, messages: list[str]) -> None:
        """Send text messages in order (one write where the transport can)."""
        ...

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the socket (idempotent; never raises for a peer that is already gone)."""
        ...
