"""HTTP/1.1 requests at the front door, sans-IO: bytes in, whole requests out.

The front door reads each request on a connection itself — its head to route it (a media
WebSocket upgrade, or the HTTP application), its body to bound it — before anything else sees
it. :class:`RequestReader` takes the connection's bytes as they come and hands back one
complete request at a time, as the exact bytes that carried it plus its parsed head; what
follows it (the next request, or a WebSocket's first frames) stays buffered. h11 parses and
frames (``Content-Length`` or chunked); a head over ``max_head_bytes`` or a body over
``max_body_bytes`` is refused with the status that says so (:class:`BadRequest`).

:func:`simple_response` builds the few answers the front door gives on its own (400, 404, 408,
413, 431, 503), each closing the connection.

No I/O, no trio: tested with tables of cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

import h11

from engine.errors import BadRequest

__all__ = ["Request", "RequestReader", "simple_response"]


@dataclass(frozen=True, slots=True)
class Request:
    """One complete request: the bytes that carried it and its head."""

    raw: bytes
    """Head and body exactly as received (what the HTTP application is given to read)."""
    method: str
    target: str
    """Path and query, as sent."""
    headers: dict[str, str]
    """Header names lowercased; a repeated header keeps its last value."""

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The target's query, without the ``?``."""
        return self.target.partition("?")[2]

    @property
    def is_websocket_upgrade(self) -> bool:
        """Whether this is a WebSocket opening handshake (RFC 6455 §4.1)."""
        return (
            self.method == "GET"
            and self.headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in self.headers.get("connection", "").lower()
        )


class RequestReader:
    """Splits one connection's bytes into complete requests."""

    __slots__ = ("_body", "_buffer", "_conn", "_fed", "_head", "_max_body", "_max_head")

    def __init__(self, *, max_head_bytes: int = 16384, max_body_bytes: int = 65536) -> None:
        self._max_head = max_head_bytes
        self._max_body = max_body_bytes
        self._buffer = bytearray()  # received, not yet handed out
        self._reset()

    def _reset(self) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head)
        self._fed = 0  # bytes of the buffer given to this request's h11 connection
        self._head: h11.Request | None = None
        self._body = 0

    @property
    def pending(self) -> bool:
        """Whether bytes of a request not yet complete have arrived (a request under way)."""
        return bool(self._buffer)

    def buffered(self) -> bytes:
        """Take what is buffered beyond the requests handed out (e.g. a WebSocket's first
        frames, after an upgrade request)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._reset()
        return rest

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer (``b""`` for end of stream is not needed)."""
        self._buffer += data

    def next_request(self) -> Request | None:
        """The next complete request, or ``None`` until more bytes arrive.

        Raises :class:`BadRequest` for a malformed request, an oversized head (431) or body
        (413).
        """
        conn = self._conn
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n", 0, self._max_head + 4)
            if end < 0 and len(self._buffer) > self._max_head:
                raise BadRequest("request head too large", 431)
        if self._fed < len(self._buffer):
            conn.receive_data(bytes(self._buffer[self._fed :]))
            self._fed = len(self._buffer)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    return None
                if isinstance(event, h11.Request):
                    self._head = event
                elif isinstance(event, h11.Data):
                    self._body += len(event.data)
                    if self._body > self._max_body:
                        raise BadRequest("request body too large", 413)
                elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                    return self._complete()
                else:  # ConnectionClosed cannot come: end of stream is never fed
                    raise BadRequest(f"unexpected {type(event).__name__}")
        except h11.RemoteProtocolError as exc:
            raise BadRequest(f"malformed request: {exc}", exc.error_status_hint) from None

    def _complete(self) -> Request:
        head = self._head
        assert head is not None
        rest, _closed = self._conn.trailing_data
        size = len(self._buffer) - len(rest)
        raw = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._reset()
        return Request(
            raw=raw,
            method=head.method.decode("ascii"),
            target=head.target.decode("latin-1"),
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers},
        )


def simple_response(status: int, body: str = "", *, headers: dict[str, str] | None = None) -> bytes:
    """A complete ``HTTP/1.1`` answer that closes the connection (``text/plain`` body)."""
    reason = HTTPStatus(status).phrase
    text = body or f"{reason}\n"
    payload = text.encode()
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(payload)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
