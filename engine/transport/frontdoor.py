"""The front door: one listening port for webhooks and media streams, and its limits.

Every connection starts here. The door reads the first request whole
(:func:`~engine.transport.http.read_request`) and routes it:

- a WebSocket upgrade to the media path becomes a
  :class:`~engine.transport.websocket.MediaWebSocket` that the call drives directly — no
  ASGI, no hypercorn, no extra task per frame;
- anything else goes, with the request already read, to the HTTP application
  (:class:`~engine.transport.http.HttpApp`), which keeps the connection for its keep-alive
  requests under the same limits.

What the door holds against hostile or broken peers: a connection that sends nothing (or
nothing more) for ``idle_timeout`` seconds is closed; a request that stalls is answered 408;
at most ``max_connections`` are open at once — beyond that a new connection is answered 503
and closed at once — and when the process runs out of file descriptors all the same, pending
connections are shed through a reserved descriptor instead of spinning on ``accept``. Refusals
are counted (:meth:`FrontDoor.statistics`) and logged at most once per ``LOG_EVERY_S``.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio

from engine.errors import ConnectionClosed, EngineError
from engine.quiet import LogLimiter
from engine.transport.http import HttpApp, HttpLimits, read_request
from engine.transport.http1 import Request, simple_response
from engine.transport.poller import Poller
from engine.transport.websocket import MediaWebSocket, answer_handshake

__all__ = [
    "DoorStatistics",
    "FrontDoor",
    "MediaRoute",
    "default_max_connections",
    "raise_descriptor_limit",
]

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0
"""Refusals are logged at most this often (a flood must not flood the log)."""
DESCRIPTOR_HEADROOM = 64
"""File descriptors kept free of connections: files, pipes of worker processes, metrics."""
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_BUSY = simple_response(503, "server busy\n")


def raise_descriptor_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections() -> int:
    """Connections one process takes at once: its descriptor limit less some headroom."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, soft - max(DESCRIPTOR_HEADROOM, soft // 16))


@dataclass(frozen=True, slots=True)
class MediaRoute:
    """Where media WebSockets go."""

    path: str
    authorize: Callable[[Request], None]
    """Checks an upgrade request; raises an :class:`~engine.errors.EngineError` whose
    ``http_status`` is the answer to refuse it."""
    run: Callable[[MediaWebSocket], Awaitable[None]]
    """Runs the call on the accepted socket."""
    max_message_bytes: int


@dataclass(slots=True)
class DoorStatistics:
    """What the door has let in and kept out."""

    open_connections: int = 0
    media_streams: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    """Connections refused, by reason: ``busy`` (at ``max_connections``), ``descriptors``
    (out of file descriptors), ``bad-request`` (4xx), ``handshake`` (upgrade refused)."""


class FrontDoor:
    """Accepts connections on listening sockets and routes their first request."""

    def __init__(
        self,
        media: MediaRoute,
        http: HttpApp | None,
        *,
        limits: HttpLimits | None = None,
        max_connections: int | None = None,
    ) -> None:
        self._media = media
        self._http = http
        self.limits = limits or HttpLimits()
        self.max_connections = max_connections or default_max_connections()
        self._stats = DoorStatistics()
        self._refusals = LogLimiter(LOG_EVERY_S)
        self._poller = Poller()
        self._reserve: int | None = None

    def statistics(self) -> DoorStatistics:
        """A snapshot of the counters."""
        stats = self._stats
        return DoorStatistics(stats.open_connections, stats.media_streams, dict(stats.refused))

    async def serve(
        self,
        sockets: Sequence[socket.socket],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on every listening socket in ``sockets`` until cancelled; connections in
        flight are cancelled with it."""
        self._reserve = os.open(os.devnull, os.O_RDONLY)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._poller.run)
                for sock in sockets:
                    sock.setblocking(False)
                    nursery.start_soon(self._accept_loop, sock, nursery)
                task_status.started()
        finally:
            if self._reserve is not None:
                os.close(self._reserve)
                self._reserve = None

    async def _accept_loop(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            while True:  # take every pending connection per wake-up
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in _OUT_OF_DESCRIPTORS:
                        self._shed(listener)
                        await trio.sleep(0.01)
                        break
                    if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                        continue
                    raise
                if self._stats.open_connections >= self.max_connections:
                    self._refuse_now(conn, "busy")
                    continue
                self._stats.open_connections += 1
                nursery.start_soon(self._connection, conn)
            await trio.lowlevel.checkpoint()

    def _shed(self, listener: socket.socket) -> None:
        """Out of descriptors: accept one pending connection on the reserved one and drop it."""
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
        try:
            conn, _ = listener.accept()
        except OSError:
            pass
        else:
            self._refuse_now(conn, "descriptors")
        try:
            self._reserve = os.open(os.devnull, os.O_RDONLY)
        except OSError:
            self._reserve = None

    def _refuse_now(self, conn: socket.socket, reason: str) -> None:
        try:
            conn.setblocking(False)
            conn.send(_BUSY)
        except OSError:
            pass
        finally:
            conn.close()
        self._count(reason)

    def _count(self, reason: str, detail: str = "") -> None:
        refused = self._stats.refused
        refused[reason] = refused.get(reason, 0) + 1
        count = self._refusals.note(reason, trio.current_time())
        if count:
            log.warning(
                "connection refused (%s%s); %d refused for this reason",
                reason,
                f": {detail}" if detail else "",
                count,
            )

    async def _connection(self, conn: socket.socket) -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
        try:
            reader = self.limits.reader()
            try:
                request = await read_request(stream, reader, self.limits)
            except EngineError as exc:  # BadRequest: malformed, too large, too slow
                self._count("bad-request", str(exc))
                await _answer(stream, exc.http_status or 400, f"{exc}\n")
                return
            if request is None:
                return
            media = self._media
            if request.is_websocket_upgrade:
                if request.path != media.path:
                    await _answer(stream, 404)
                    return
                try:
                    media.authorize(request)
                except EngineError as exc:
                    self._count("handshake", str(exc))
                    await _answer(stream, exc.http_status or 403, f"{exc}\n")
                    return
                try:
                    socket_ = await answer_handshake(
                        stream,
                        request,
                        reader.buffered(),
                        max_message_bytes=media.max_message_bytes,
                        poller=self._poller,
                    )
                except EngineError as exc:  # BadRequest: not a valid handshake after all
                    self._count("bad-request", str(exc))
                    await _answer(stream, exc.http_status or 400, f"{exc}\n")
                    return
                self._stats.media_streams += 1
                try:
                    await media.run(socket_)
                except ConnectionClosed:
                    pass
                finally:
                    self._stats.media_streams -= 1
                    with trio.CancelScope(shield=True):
                        await socket_.close(1001)
            elif self._http is not None:
                await self._http.serve(stream, reader, request)
            else:
                await _answer(stream, 404)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:  # one broken connection must never take the server down
            log.exception("connection failed")
        finally:
            self._stats.open_connections -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def _answer(stream: trio.SocketStream, status: int, body: str = "") -> None:
    try:
        with trio.move_on_after(1.0):
            await stream.send_all(simple_response(status, body))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
