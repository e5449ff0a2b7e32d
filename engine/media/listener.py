"""A dedicated WebSocket listener for media streams: trio sockets and wsproto, nothing between.

Every inbound frame of every call crosses the media socket, so its path is kept short: the
call's reader task reads the TCP stream itself, feeds wsproto, and gets the messages — no
per-connection reader task, no channel hop, no per-read timeout scope. Sends are serialized by a
lock (playout is the only regular writer; the reader answers pings and closes).

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
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from engine.errors import CLOSE_MESSAGE_TOO_BIG, CLOSE_PROTOCOL_ERROR, ConnectionClosed

__all__ = ["UpgradeCheck", "WsprotoMediaSocket", "serve_media"]

log = logging.getLogger(__name__)

RECEIVE_BYTES = 65536
HANDSHAKE_TIMEOUT = 10.0
CLOSE_WAIT = 1.0
DISCARD_LIMIT = 1 << 20  # bytes of an oversized message read and dropped before giving up
UpgradeCheck = Callable[[str, Mapping[str, str]], bool]
"""``(target, headers) → accept?`` for an upgrade request (target = path and query)."""


class WsprotoMediaSocket:
    """A server-side WebSocket on a trio stream (a :class:`~engine.media.session.MediaSocket`)."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection, max_message_bytes: int) -> None:
        self._stream = stream
        self._ws = ws
        self._max = max_message_bytes
        self._ready: deque[str | bytes] = deque()
        self._partial: list[str | bytes] = []
        self._partial_size = 0
        self._send_lock = trio.Lock()
        self._closed = False

    async def receive(self) -> str | bytes:
        """The next complete message; :class:`ConnectionClosed` once the peer is gone."""
        while not self._ready:
            if self._closed:
                raise ConnectionClosed(None, "closed")
            try:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._closed = True
                raise ConnectionClosed(None, "connection lost") from exc
            if not data:
                self._closed = True
                raise ConnectionClosed(None, "connection lost")
            try:
                self._ws.receive_data(data)
                await self._handle_events()
            except RemoteProtocolError as exc:
                await self.close(CLOSE_PROTOCOL_ERROR, "bad WebSocket framing")
                raise ConnectionClosed(None, f"bad framing: {exc}") from exc
        return self._ready.popleft()

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
                await self._send_raw(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if not self._closed:
                    self._closed = True
                    with contextlib.suppress(ConnectionClosed):
                        await self._send_raw(self._ws.send(event.response()))
                    await self._stream.aclose()
                raise ConnectionClosed(event.code, event.reason or "")

    async def _send_raw(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._closed = True
                raise ConnectionClosed(None, "connection lost") from exc

    async def send(self, message: str) -> None:
        """Send one text message."""
        if self._closed:
            raise ConnectionClosed(None, "closed")
        try:
            data = self._ws.send(Message(data=message))
        except LocalProtocolError as exc:
            raise ConnectionClosed(None, "closing") from exc
        await self._send_raw(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and close the TCP stream; quiet if the peer is already gone."""
        if self._closed:
            return
        self._closed = True
        reason = reason.encode()[:123].decode(errors="ignore")
        # Shielded and bounded: the call may be cancelled around us, the close still goes out.
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_WAIT):
            try:
                data = self._ws.send(CloseConnection(code=code, reason=reason))
                async with self._send_lock:
                    await self._stream.send_all(data)
                # The closing handshake: read (and drop) until the peer's close frame, so
                # unread input does not make the kernel answer with a reset instead; then the
                # server closes the TCP connection first (RFC 6455 §7.1.1).
                while (chunk := await self._stream.receive_some(RECEIVE_BYTES)) and not any(
                    isinstance(e, CloseConnection) for e in self._receive_quietly(chunk)
                ):
                    pass
            except (LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await self._stream.aclose()

    def _receive_quietly(self, data: bytes) -> list[object]:
        try:
            self._ws.receive_data(data)
            return list(self._ws.events())
        except RemoteProtocolError:
            return [CloseConnection(code=CLOSE_PROTOCOL_ERROR)]


async def _handshake(
    stream: trio.SocketStream, ws: WSConnection, path: str, check: UpgradeCheck
) -> bool:
    """Read the upgrade request and answer it; whether the socket was accepted."""
    request: Request | None = None
    with trio.move_on_after(HANDSHAKE_TIMEOUT):
        while request is None:
            data = await stream.receive_some(RECEIVE_BYTES)
            if not data:
                return False
            ws.receive_data(data)
            request = next((e for e in ws.events() if isinstance(e, Request)), None)
    if request is None:
        return False
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.extra_headers}
    if request.target.split("?", 1)[0] != path:
        await stream.send_all(ws.send(RejectConnection(status_code=404)))
        return False
    if not check(request.target, headers):
        log.warning("media stream refused: bad X-Twilio-Signature on the handshake")
        await stream.send_all(ws.send(RejectConnection(status_code=403)))
        return False
    await stream.send_all(ws.send(AcceptConnection()))
    return True


async def _accept(
    stream: trio.SocketStream,
    path: str,
    check: UpgradeCheck,
    handler: Callable[[WsprotoMediaSocket], Awaitable[None]],
    max_message_bytes: int,
) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    try:
        accepted = await _handshake(stream, ws, path, check)
    except (RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.info("media handshake failed: %s", exc)
        accepted = False
    if not accepted:
        await stream.aclose()
        return
    socket = WsprotoMediaSocket(stream, ws, max_message_bytes)
    try:
        # Frames that came in the same read as the handshake are already in wsproto.
        await socket._handle_events()
        await handler(socket)
    except ConnectionClosed:
        pass
    finally:
        with trio.CancelScope(shield=True):
            await socket.close(1001)


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
