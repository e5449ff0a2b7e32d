"""A dedicated WebSocket listener for media streams: trio sockets and wsproto, nothing between.

Every inbound frame of every call crosses the media socket, so its path is kept short: the
call's reader task reads the socket itself and gets the messages — no per-connection reader
task, no channel hop, no per-read timeout scope — and the common frames (the client's masked
text frames, the server's text frames) skip wsproto (:mod:`engine.media.wsframe`). Writes go
out in order, at once while the kernel takes them (see :class:`WsprotoMediaSocket`).

:func:`serve_media` accepts connections, checks the upgrade (path and an ``authorize_upgrade``
callback, e.g. the Twilio signature) and hands each accepted :class:`WsprotoMediaSocket` to a
handler. Messages over ``max_message_bytes`` close the socket with 1009.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import partial

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from engine.errors import CLOSE_MESSAGE_TOO_BIG, CLOSE_PROTOCOL_ERROR, ConnectionClosed
from engine.media.wsframe import FastFrameDecoder, text_frame

__all__ = ["UpgradeCheck", "WsprotoMediaSocket", "serve_media"]

log = logging.getLogger(__name__)

RECEIVE_BYTES = 65536
HANDSHAKE_TIMEOUT = 10.0
CLOSE_WAIT = 1.0
DISCARD_LIMIT = 1 << 20  # bytes of an oversized message read and dropped before giving up
UpgradeCheck = Callable[[str, Mapping[str, str]], bool]
"""``(target, headers) → accept?`` for an upgrade request (target = path and query)."""


class WsprotoMediaSocket:
    """A server-side WebSocket on a connected socket (a :class:`~engine.media.session.MediaSocket`).

    The common frames skip wsproto (:mod:`engine.media.wsframe`): the client's complete masked
    text frames are decoded, and text frames sent, in a few lines; wsproto keeps everything
    else. The socket is driven directly (``wait_readable`` then one ``recv``; ``send`` at once
    while the kernel takes it), so a frame costs one wake-up of the reader, not the several
    checkpoints of a ``trio.SocketStream``. Writes that find the kernel's buffer full queue in
    order behind a flush that waits for the socket, and hold their writer until it is done.
    """

    def __init__(
        self, sock: socket.socket, ws: WSConnection, max_message_bytes: int, first: bytes = b""
    ) -> None:
        """``first``: bytes of the stream already read past the handshake."""
        sock.setblocking(False)
        self._sock = sock
        self._ws = ws
        self._max = max_message_bytes
        self._fast = FastFrameDecoder(max_message_bytes)
        self._ready: deque[str | bytes] = deque()
        self._partial: list[str | bytes] = []
        self._partial_size = 0
        self._unsent = bytearray()
        self._flush_lock = trio.Lock()
        self._closed = False
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
                raise ConnectionClosed(None, "closed")
            data = self._first or await self._recv()
            self._first = b""
            try:
                for item in self._fast.feed(data):
                    if isinstance(item, str):
                        self._ready.append(item)
                    else:
                        self._ws.receive_data(item)
                        await self._handle_events()
            except RemoteProtocolError as exc:
                await self.close(CLOSE_PROTOCOL_ERROR, "bad WebSocket framing")
                raise ConnectionClosed(None, f"bad framing: {exc}") from exc
        return self._ready.popleft()

    async def _recv(self) -> bytes:
        sock = self._sock
        while True:
            await trio.lowlevel.wait_readable(sock)
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
                        raise ConnectionClosed(CLOSE_MESSAGE_TOO_BIG, "message too big")
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
                raise ConnectionClosed(event.code, event.reason or "")

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


async def _handshake(
    stream: trio.SocketStream, ws: WSConnection, path: str, check: UpgradeCheck
) -> bytes | None:
    """Read the upgrade request and answer it; the bytes read past the request (the first
    frames) if the socket was accepted, else ``None``. wsproto sees only the request."""
    request: Request | None = None
    head = b""
    with trio.move_on_after(HANDSHAKE_TIMEOUT):
        while request is None:
            data = await stream.receive_some(RECEIVE_BYTES)
            if not data:
                return None
            head += data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                if len(head) > RECEIVE_BYTES:
                    return None
                continue
            head, data = head[: end + 4], head[end + 4 :]
            ws.receive_data(head)
            request = next((e for e in ws.events() if isinstance(e, Request)), None)
            if request is None:
                return None
    if request is None:
        return None
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.extra_headers}
    if request.target.split("?", 1)[0] != path:
        await stream.send_all(ws.send(RejectConnection(status_code=404)))
        return None
    if not check(request.target, headers):
        log.warning("media stream refused: bad X-Twilio-Signature on the handshake")
        await stream.send_all(ws.send(RejectConnection(status_code=403)))
        return None
    await stream.send_all(ws.send(AcceptConnection()))
    return data


async def _accept(
    stream: trio.SocketStream,
    path: str,
    check: UpgradeCheck,
    handler: Callable[[WsprotoMediaSocket], Awaitable[None]],
    max_message_bytes: int,
) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    try:
        first = await _handshake(stream, ws, path, check)
    except (RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.info("media handshake failed: %s", exc)
        first = None
    if first is None:
        await stream.aclose()
        return
    # The call drives the socket itself from here (see WsprotoMediaSocket).
    sock = socket.socket(fileno=stream.socket.detach())
    await stream.aclose()
    media_socket = WsprotoMediaSocket(sock, ws, max_message_bytes, first)
    try:
        await handler(media_socket)
    except ConnectionClosed:
        pass
    finally:
        with trio.CancelScope(shield=True):
            await media_socket.close(1001)


async def serve_media(
    handler: Callable[[WsprotoMediaSocket], Awaitable[None]],
    *,
    host: str,
    port: int,
    path: str,
    check: UpgradeCheck,
    max_message_bytes: int,
    sock: socket.socket | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` and run ``handler`` for every accepted media WebSocket at ``path``.

    ``sock``, when given, is an already listening socket to accept on instead (worker processes
    share one this way). Reports the bound port through ``task_status``; runs until cancelled.
    """
    if sock is not None:
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
    else:
        listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        serve = partial(
            trio.serve_listeners,
            partial(
                _accept,
                path=path,
                check=check,
                handler=handler,
                max_message_bytes=max_message_bytes,
            ),
            listeners,
        )
        await nursery.start(serve)
        task_status.started(bound)
