"""The HTTP application behind the front door: an ASGI app (Quart) on hypercorn's HTTP/1.1.

The front door has already read a connection's first request when it hands the connection
over; :class:`HttpApp` gives hypercorn that connection through :class:`_RequestStream`, which
replays the request and then reads each following one whole, as the front door did: a
keep-alive connection idle for ``idle_timeout`` seconds once its last answer has begun is
closed, a request that does not
arrive complete within ``request_timeout`` seconds is answered 408 and its connection closed,
and oversized or malformed requests get their 4xx before hypercorn sees a byte. Writes and the
final half-close share one lock, so a connection closing while a response is being written
cannot raise ``BusyResourceError`` inside hypercorn.

:func:`open_http_app` runs the application's ASGI lifespan (startup, shutdown) around the
block. Hypercorn's per-connection ``TCPServer`` and ``Lifespan`` are used as hypercorn's own
``serve`` uses them (hypercorn ≥ 0.17).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

from engine.errors import BadRequest
from engine.transport.http1 import Request, RequestReader, simple_response

__all__ = ["HttpApp", "HttpLimits", "open_http_app", "read_request"]

log = logging.getLogger(__name__)

RECEIVE_BYTES = 65536


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How long and how large requests may be at the front door."""

    idle_timeout: float = 5.0
    """Seconds a connection may sit between requests (or before its first) before it is
    closed."""
    request_timeout: float = 10.0
    """Seconds a request may take to arrive whole once it has begun (a stalled body: 408)."""
    concurrent_requests: int = 4
    """Requests the HTTP application works on at once (the rest wait their turn): a burst of
    webhooks then costs the calls already streaming a few steps per scheduling round, not
    dozens. Twilio waits up to 15 s for a webhook's answer."""
    answer_timeout: float = 60.0
    """Seconds the application may take to begin answering a request before its connection
    is given up."""
    max_head_bytes: int = 16384
    max_body_bytes: int = 65536
    """Largest request body (Twilio's webhooks are a few KiB)."""

    def reader(self) -> RequestReader:
        """A request reader with these size limits."""
        return RequestReader(max_head_bytes=self.max_head_bytes, max_body_bytes=self.max_body_bytes)


async def read_request(
    stream: trio.SocketStream, reader: RequestReader, limits: HttpLimits
) -> Request | None:
    """The next whole request on ``stream``; ``None`` if the peer closed or stayed idle.

    Raises :class:`~engine.errors.BadRequest` for a malformed or oversized request, and with
    status 408 for one that began but did not arrive within ``limits.request_timeout``.
    """
    request = reader.next_request()
    if request is not None:  # pipelined behind the previous one
        return request
    now = trio.current_time()
    deadline = now + (limits.request_timeout if reader.pending else limits.idle_timeout)
    while True:
        data = b""
        with trio.move_on_at(deadline):
            data = await stream.receive_some(RECEIVE_BYTES)
            if not data:
                return None
        if not data:  # timed out
            if reader.pending:
                raise BadRequest("request timed out", 408)
            return None
        if not reader.pending:
            deadline = trio.current_time() + limits.request_timeout
        reader.feed(data)
        request = reader.next_request()
        if request is not None:
            return request


class _RequestStream(trio.abc.HalfCloseableStream):
    """One connection as hypercorn sees it: whole requests in, everything out under a lock."""

    def __init__(
        self,
        stream: trio.SocketStream,
        reader: RequestReader,
        first: Request,
        limits: HttpLimits,
        working: trio.CapacityLimiter,
    ) -> None:
        self._stream = stream
        self._working = working
        self._holding = False  # a working slot, from handing a request over to its answer
        self._reader = reader
        self._limits = limits
        self._next: bytes = first.raw
        self._answered = trio.Event()  # set once the answer to the last request has begun
        self._send_lock = trio.Lock()
        self.socket = stream.socket  # hypercorn reads the peer's address from it

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._next:
            # The connection is not idle while the application works on a request: wait for
            # its answer to begin before the idle clock runs again.
            with trio.move_on_after(self._limits.answer_timeout) as waited:
                await self._answered.wait()
            if waited.cancelled_caught:
                return b""  # no answer in all that time: give up the connection
            try:
                request = await read_request(self._stream, self._reader, self._limits)
            except BadRequest as exc:
                await self._refuse(exc)
                return b""
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
            if request is None:
                return b""
            self._next = request.raw
        data, self._next = self._next, b""
        self._answered = trio.Event()
        await self._working.acquire_on_behalf_of(self)
        self._holding = True
        return data

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            self._working.release_on_behalf_of(self)

    async def _refuse(self, exc: BadRequest) -> None:
        status = exc.http_status or 400
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.send_all(simple_response(status, f"{exc}\n"))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._answered.set()
        self._release()  # the answer has begun: the request's work is done
        async with self._send_lock:
            await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        async with self._send_lock:
            await self._stream.send_eof()

    async def aclose(self) -> None:
        self._release()
        await self._stream.aclose()


class HttpApp:
    """An ASGI application served on connections the front door hands over."""

    def __init__(self, app: Any, config: HypercornConfig, limits: HttpLimits) -> None:
        self._app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self._config = config
        self.limits = limits
        self.context = WorkerContext(None)
        self._working = trio.CapacityLimiter(limits.concurrent_requests)
        self.state: dict[str, Any] = {}

    async def serve(self, stream: trio.SocketStream, reader: RequestReader, first: Request) -> None:
        """Serve ``stream``, whose first request ``first`` was already read, until it closes."""
        connection = _RequestStream(stream, reader, first, self.limits, self._working)
        server = TCPServer(
            self._app,
            self._config,
            self.context,
            self.state.copy(),
            connection,  # type: ignore[arg-type]
        )
        await server.run()


@asynccontextmanager
async def open_http_app(
    app: Any, limits: HttpLimits, *, graceful_timeout: float = 5.0
) -> AsyncIterator[HttpApp]:
    """Run ``app``'s ASGI lifespan around the block, which serves connections with the
    :class:`HttpApp` it gets."""
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = graceful_timeout
    config.keep_alive_timeout = limits.idle_timeout
    http = HttpApp(app, config, limits)
    lifespan = Lifespan(http._app, config, http.state)
    async with trio.open_nursery() as nursery:
        await nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        try:
            yield http
        finally:
            await http.context.terminated.set()
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(graceful_timeout),
                suppress(trio.ClosedResourceError, trio.BrokenResourceError),
            ):
                await lifespan.wait_for_shutdown()  # the app's shutdown hooks
            nursery.cancel_scope.cancel()
