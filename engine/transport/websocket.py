"""The media WebSocket: a connected socket driven directly, wsproto only where it is needed.

Every inbound frame of every call crosses the media socket, so its path is kept short: the
call's reader task reads the socket itself and gets the messages — no per-connection reader
task, no channel hop, no per-read timeout scope — and the common frames (the client's masked
text frames, the server's text frames) skip wsproto (:mod:`engine.transport.wsframe`). Writes
go out in order, at once while the kernel takes them.

:func:`answer_handshake` answers the opening handshake of a request the front door has read;
:class:`MediaWebSocket` is the accepted socket (the session's
:class:`~engine.media.session.MediaSocket`). A message over ``max_message_bytes`` closes the
socket with 1009 and raises :class:`~engine.errors.MessageTooBig`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import deque

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from engine.errors import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_PROTOCOL_ERROR,
    BadRequest,
    ConnectionClosed,
    MessageTooBig,
)
from engine.transport.http1 import Request as HttpRequest
from engine.transport.poller import Poller
from engine.transport.wsframe import FastFrameDecoder, text_frame

__all__ = ["MediaWebSocket", "answer_handshake"]

log = logging.getLogger(__name__)

RECEIVE_BYTES = 65536
CLOSE_WAIT = 1.0
DISCARD_LIMIT = 1 << 20  # bytes of an oversized message read and dropped before giving up


class MediaWebSocket:
    """A server-side WebSocket on a connected socket (a :class:`~engine.media.session.MediaSocket`).

    The common frames skip wsproto (:mod:`engine.transport.wsframe`): the client's complete masked
    text frames are decoded, and text frames sent, in a few lines; wsproto keeps everything
    else. The socket is driven directly (``wait_readable`` then one ``recv``; ``send`` at once
    while the kernel takes it), so a frame costs one wake-up of the reader, not the several
    checkpoints of a ``trio.SocketStream``. Writes that find the kernel's buffer full queue in
    order behind a flush that waits for the socket, and hold their writer until it is done.
    """

    def __init__(
        self,
        sock: socket.socket,
        ws: WSConnection,
        max_message_bytes: int,
        poller: Poller,
        first: bytes = b"",
    ) -> None:
        """``poller`` watches the socket for data; ``first``: bytes of the stream already
        read past the handshake."""
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._poller = poller
        poller.watch(self._fd)
        self._ws = ws
        self._max = max_message_bytes
        self._fast = FastFrameDecoder(max_message_bytes)
        self._ready: deque[str | bytes] = deque()
        self._partial: list[str | bytes] = []
        self._partial_size = 0
        self._unsent = bytearray()
        self._flush_lock = trio.Lock()
        self._closed = False
        self._peer_closed: ConnectionClosed | None = None  # the peer's close, once it came
        self._released = False
        self._first = first

    @property
    def pending(self) -> int:
        """Messages already received and not yet taken by :meth:`receive`."""
        return len(self._ready)

    async def receive(self) -> str | bytes:
        """The next complete message; :class:`ConnectionClosed` once the peer is gone."""
        while not self._ready:
            if self._closed:
                raise self._peer_closed or ConnectionClosed(None, "closed")
            data = self._first or await self._recv()
            self._first = b""
            try:
                for item in self._fast.feed(data):
                    if isinstance(item, str):
                        self._ready.append(item)
                    else:
                        self._ws.receive_data(item)
                        await self._handle_events()
                        if self._peer_closed is not None:
                            break  # what came before the close is still delivered
            except RemoteProtocolError as exc:
                await self.close(CLOSE_PROTOCOL_ERROR, "bad WebSocket framing")
                raise ConnectionClosed(None, f"bad framing: {exc}") from exc
        return self._ready.popleft()

    async def _recv(self) -> bytes:
        sock, poller, fd = self._sock, self._poller, self._fd
        while True:
            try:
                await poller.wait_readable(fd)
            except trio.ClosedResourceError as exc:
                self._closed = True
                raise ConnectionClosed(None, "closed") from exc
            try:
                data = sock.recv(RECEIVE_BYTES)
            except BlockingIOError:
                continue
            except OSError as exc:
                self._closed = True
                raise ConnectionClosed(None, "connection lost") from exc
            if not data:
                self._closed = True
                raise ConnectionClosed(None, "connection lost")
            if len(data) == RECEIVE_BYTES:
                poller.mark_ready(fd)  # the kernel may hold more: read it before waiting
            return data

    async def _handle_events(self) -> None:
        for event in self._ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                data = event.data
                self._partial.append(bytes(data) if isinstance(data, bytearray) else data)
                self._partial_size += len(data)
                if self._partial_size > self._max:
                    # Drop the rest of the message, then refuse it: closing while the peer is
                    # still sending it would reach the peer as a reset, not as code 1009.
                    self._partial.clear()
                    if event.message_finished or self._partial_size > DISCARD_LIMIT:
                        await self.close(CLOSE_MESSAGE_TOO_BIG, "message too big")
                        raise MessageTooBig(self._max)
                    continue
                if event.message_finished:
                    parts, self._partial, self._partial_size = self._partial, [], 0
                    if len(parts) == 1:
                        self._ready.append(parts[0])
                    elif isinstance(event, TextMessage):
                        self._ready.append("".join(str(p) for p in parts))
                    else:
                        self._ready.append(b"".join(p for p in parts if isinstance(p, bytes)))
            elif isinstance(event, Ping):
                await self._write(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if not self._closed:
                    self._closed = True
                    with contextlib.suppress(ConnectionClosed):
                        await self._write(self._ws.send(event.response()), closing=True)
                    self._release()
                # Raised once the messages that came before the close have been taken.
                self._peer_closed = ConnectionClosed(event.code, event.reason or "")
                return

    async def _write(self, data: bytes, *, closing: bool = False) -> None:
        """Write ``data`` after everything written before it; no checkpoint if the kernel
        takes it at once."""
        if self._closed and not closing:
            raise ConnectionClosed(None, "closed")
        if not self._unsent:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._closed = True
                raise ConnectionClosed(None, "connection lost") from exc
            if sent == len(data):
                return
            data = data[sent:]
        self._unsent += data
        async with self._flush_lock:  # the first waiter flushes what every writer queued
            while self._unsent:
                await trio.lowlevel.wait_writable(self._sock)
                try:
                    sent = self._sock.send(self._unsent)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._closed = True
                    self._unsent.clear()
                    raise ConnectionClosed(None, "connection lost") from exc
                del self._unsent[:sent]

    async def send(self, message: str) -> None:
        """Send one text message."""
        await self._write(text_frame(message))

    async def send_many(self, messages: list[str]) -> None:
        """Send text messages in order, in one write."""
        await self._write(b"".join([text_frame(m) for m in messages]))

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._poller.forget(self._fd)
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and close the TCP connection; quiet if the peer is already gone."""
        if self._closed:
            self._release()
            return
        self._closed = True
        reason = reason.encode()[:123].decode(errors="ignore")
        # Shielded and bounded: the call may be cancelled around us, the close still goes out.
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_WAIT):
            try:
                await self._write(
                    self._ws.send(CloseConnection(code=code, reason=reason)), closing=True
                )
                # The closing handshake: read (and drop) until the peer's close frame, so
                # unread input does not make the kernel answer with a reset instead; then the
                # server closes the TCP connection first (RFC 6455 §7.1.1).
                chunk = self._fast.detach()
                while not any(isinstance(e, CloseConnection) for e in self._receive_quietly(chunk)):
                    chunk = await self._recv()
            except (LocalProtocolError, ConnectionClosed):
                pass
        self._release()

    def _receive_quietly(self, data: bytes) -> list[object]:
        try:
            self._ws.receive_data(data)
            return list(self._ws.events())
        except RemoteProtocolError:
            return [CloseConnection(code=CLOSE_PROTOCOL_ERROR)]


async def answer_handshake(
    stream: trio.SocketStream,
    request: HttpRequest,
    first: bytes,
    *,
    max_message_bytes: int,
    poller: Poller,
) -> MediaWebSocket:
    """Accept the opening handshake ``request`` (already read from ``stream``; ``first`` holds
    the bytes that followed it): answer 101 and return the :class:`MediaWebSocket` that now
    owns the connection's socket (``stream`` is spent). Raises
    :class:`~engine.errors.BadRequest` if wsproto finds it is not a valid handshake."""
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(request.raw)
        valid = any(isinstance(event, Request) for event in ws.events())
    except RemoteProtocolError as exc:
        raise BadRequest(f"bad WebSocket handshake: {exc}") from None
    if not valid:
        raise BadRequest("bad WebSocket handshake")
    await stream.send_all(ws.send(AcceptConnection()))
    # The call drives the socket itself from here (see MediaWebSocket).
    sock = socket.socket(fileno=stream.socket.detach())
    await stream.aclose()
    return MediaWebSocket(sock, ws, max_message_bytes, poller, first)
