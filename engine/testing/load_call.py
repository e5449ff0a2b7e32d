"""The socket side of a load call, driven by :mod:`engine.testing.load`'s epoll loop.

A :class:`CallSocket` owns one non-blocking socket at a time — the webhook's, then the
stream's — and moves through :class:`Phase`. It connects, writes (holding what the kernel does
not take, within a bound), reads (with the kernel's receive timestamp once streaming) and ends
the call; every failure ends it with its ``error`` recorded, never an exception out of the
loop. An ``https://`` or ``wss://`` URL gets TLS between the socket and the protocol
(:class:`~engine.testing.load_tls.TlsSession`, sans-IO: the loop still reads the socket
itself). What the bytes mean is :class:`engine.testing.load_media.Call`'s business: it answers
:meth:`~CallSocket.answered`, :meth:`~CallSocket.shaken` and :meth:`~CallSocket.received`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from engine.testing.load_tls import TlsSession, client_context
from engine.testing.load_wire import WireError, b64_frames

if TYPE_CHECKING:
    from engine.testing.load import LoadCall, LoadPlan

__all__ = ["EARLY_S", "FRAME_S", "TLS_SCHEMES", "CallSocket", "LoopState", "Phase"]

FRAME_S: Final = 0.020
EARLY_S: Final = 0.001
_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT
_RECEIVE_BYTES: Final = 65536
SO_TIMESTAMPNS: Final = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not name it
_ANCILLARY_BYTES: Final = socket.CMSG_SPACE(16)
_TIMESPEC: Final = struct.Struct("qq")
Resolver = Callable[[str], "tuple[socket.AddressFamily, tuple[Any, ...]]"]
TLS_SCHEMES: Final = frozenset({"https", "wss"})
"""URL schemes whose connections are made over TLS."""


class Phase:
    """Where a call is (plain ints: compared on every event)."""

    WAITING: Final = 0
    RING_CONNECT: Final = 1
    RINGING: Final = 2
    WS_CONNECT: Final = 3
    HANDSHAKE: Final = 4
    STREAMING: Final = 5
    DRAINING: Final = 6
    STOPPING: Final = 7
    DONE: Final = 8
    NAMES: Final = (
        "waiting",
        "ringing",
        "ringing",
        "handshake",
        "handshake",
        "streaming",
        "draining",
        "stopping",
        "done",
    )


class LoopState:
    """What every call of a run shares: the plan, the epoll, the frame heap, the counters."""

    def __init__(self, plan: LoadPlan, ep: select.epoll, heap: list[tuple[float, int]]) -> None:
        self.plan = plan
        self.ep = ep
        self.heap = heap
        self.by_fd: dict[int, CallSocket] = {}
        self.resolve: Resolver = _unresolved
        self.b64 = b64_frames(plan.frames)
        self.frame_count = len(self.b64)
        lengths = {len(b) for b in self.b64}
        self.b64_length = lengths.pop() if len(lengths) == 1 else 0
        """The base64 length of every frame, if they are all the same size (else 0)."""
        self.echo_tails = [b + b'"}}' for b in self.b64]
        self.frame_bytes = len(plan.frames[0]) if plan.frames else 0
        self.frame_seconds = self.frame_bytes / 8000
        self.total = round(plan.duration / FRAME_S)
        self.early = 2 * plan.batch or EARLY_S
        """How far ahead of its slot a frame may go: two of the loop's ticks (a tick can
        overrun), or a millisecond (epoll waits whole milliseconds)."""
        self.epoch = time.monotonic()
        """The run's start: each call's frames keep their own offset from it (mod 20 ms)."""
        self.polled_at = 0.0
        """When the last epoll wait returned: the latest arrival time of what it reported
        (used where the kernel gave no receive timestamp)."""
        self.timestamps = plan.batch > 0
        """Whether stream sockets get kernel receive timestamps (``SO_TIMESTAMPNS``)."""
        self.realtime_offset = time.time() - time.monotonic()
        """Kernel timestamps are wall-clock time; minus this, they are monotonic."""
        self.active = 0
        self.setting_up = 0
        self.streaming = 0
        self.peak_streaming = 0
        self._tls_context: ssl.SSLContext | None = plan.ssl_context

    def tls_context(self) -> ssl.SSLContext:
        """The client TLS context: the plan's, or one trusting the system's CAs (made once)."""
        if self._tls_context is None:
            self._tls_context = client_context()
        return self._tls_context


def _unresolved(url: str) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    raise WireError(f"no resolver for {url}")


class CallSocket:
    """One call's connection and lifecycle (see the module docstring)."""

    __slots__ = (
        "deadline",
        "fd",
        "index",
        "on_connect",
        "pending",
        "phase",
        "record",
        "sock",
        "state",
        "tls",
    )

    def __init__(self, index: int, record: LoadCall, state: LoopState) -> None:
        self.index = index
        self.record = record
        self.state = state
        self.phase = Phase.WAITING
        self.sock: socket.socket | None = None
        self.fd = -1
        self.deadline = float("inf")
        self.on_connect = b""
        self.pending: bytearray | None = None
        self.tls: TlsSession | None = None
        """The connection's TLS, for an ``https://`` or ``wss://`` URL."""

    # -- what the bytes mean (load_media.Call) ---------------------------------------------------

    def answered(self, data: bytes) -> None:
        """Bytes of the webhook's answer arrived (``b""``: the connection closed)."""
        raise NotImplementedError

    def shaken(self, data: bytes) -> None:
        """Bytes of the handshake's answer arrived (``b""``: the connection closed)."""
        raise NotImplementedError

    def received(self, data: bytes, t: float) -> None:
        """Stream bytes arrived at ``t``."""
        raise NotImplementedError

    # -- connecting ------------------------------------------------------------------------------

    def _connect(self, url: str, phase: int, request: bytes) -> None:
        parts = urlsplit(url)
        try:
            family, address = self.state.resolve(url)
            if parts.scheme in TLS_SCHEMES:
                self.tls = TlsSession(self.state.tls_context(), parts.hostname or "")
            sock = socket.socket(family, socket.SOCK_STREAM)
        except (WireError, OSError, ValueError) as exc:
            self.fail(str(exc))
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if phase == Phase.WS_CONNECT and self.state.timestamps:
            # The kernel stamps each arrival: echo times stay exact while the loop naps.
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock, self.fd, self.phase, self.on_connect = sock, sock.fileno(), phase, request
        self.state.by_fd[self.fd] = self
        self.deadline = time.monotonic() + self.state.plan.setup_timeout
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            self.fail(f"connect to {url}: {os.strerror(code)}")
            return
        self.state.ep.register(self.fd, _OUT)

    def _connected(self) -> None:
        assert self.sock is not None
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.fail(f"connect: {os.strerror(code)}")
            return
        self.phase += 1
        self.state.ep.modify(self.fd, _IN)
        if self.tls is not None:
            self._tls_handshake(None)
        else:
            self._send(self.on_connect)

    def _tls_handshake(self, raw: bytes | None) -> None:
        """Advance the TLS handshake; once it is done, send the request it held back."""
        assert self.tls is not None
        try:
            out = self.tls.handshake(raw)
        except WireError as exc:
            self.fail(str(exc))
            return
        if out:
            self._send_raw(out)
        if self.tls.established and self.phase != Phase.DONE:
            self._send(self.on_connect)

    # -- I/O -------------------------------------------------------------------------------------

    def on_event(self, events: int) -> None:
        """The socket is ready (``events`` from epoll)."""
        phase = self.phase
        if events == _IN and phase >= Phase.STREAMING and self.state.timestamps:
            # The common case, kept lean: the server's bytes, with the kernel's arrival time.
            try:
                data, ancillary, _, _ = self.sock.recvmsg(_RECEIVE_BYTES, _ANCILLARY_BYTES)  # type: ignore[union-attr]
            except BlockingIOError:
                return
            except OSError as exc:
                self.fail(f"receive: {exc}")
                return
            if ancillary and len(ancillary[0][2]) == 16:
                seconds, nanoseconds = _TIMESPEC.unpack(ancillary[0][2])
                self._arrived(data, seconds + nanoseconds * 1e-9 - self.state.realtime_offset)
            else:
                self._arrived(data, self.state.polled_at)
            return
        if phase == Phase.RING_CONNECT or phase == Phase.WS_CONNECT:
            self._connected()
            return
        if events & _OUT and self.pending is not None:
            self._flush()
            if self.phase == Phase.DONE or not events & ~_OUT:
                return
        sock = self.sock
        assert sock is not None
        try:
            data = sock.recv(_RECEIVE_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"receive: {exc}")
            return
        if phase >= Phase.STREAMING:
            self._arrived(data, self.state.polled_at)
            return
        tls = self.tls
        if tls is None:
            self._setup_data(phase, data)
        elif not tls.established:
            self._tls_handshake(data)
        else:
            plaintext, closed = self._decrypt(tls, data)
            if plaintext:
                self._setup_data(phase, plaintext)
            if closed and self.phase == phase:
                self._setup_data(phase, b"")

    def _setup_data(self, phase: int, data: bytes) -> None:
        if phase == Phase.RINGING:
            self.answered(data)
        elif phase == Phase.HANDSHAKE:
            self.shaken(data)

    def _decrypt(self, tls: TlsSession, raw: bytes) -> tuple[bytes, bool]:
        """The plaintext of ``raw`` and whether the connection ended (a failure ends the call:
        nothing and closed, with the phase already done)."""
        try:
            plaintext, out, closed = tls.decrypt(raw)
        except WireError as exc:
            self.fail(str(exc))
            return b"", False
        if out and not closed:
            self._send_raw(out)
        return plaintext, closed

    def _arrived(self, data: bytes, t: float) -> None:
        tls = self.tls
        if tls is not None:
            data, closed = self._decrypt(tls, data)
            if data:
                self.received(data, t)
            if not closed or self.phase == Phase.DONE:
                return
            data = b""
        if data:
            self.received(data, t)
        elif self.phase == Phase.STOPPING:
            self._end()
        else:
            self.fail(f"the server closed the connection while {Phase.NAMES[self.phase]}")

    def _send(self, data: bytes) -> None:
        """Write ``data`` (through TLS when the connection has it)."""
        if self.tls is not None:
            try:
                data = self.tls.encrypt(data)
            except WireError as exc:
                self.fail(str(exc))
                return
        self._send_raw(data)

    def _send_raw(self, data: bytes) -> None:
        if self.pending is not None:
            self.pending += data
            if len(self.pending) > self.state.plan.max_pending_bytes:
                self.fail("the server stopped reading (send buffer over its limit)")
            return
        assert self.sock is not None
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.fail(f"send: {exc}")
            return
        if sent < len(data):
            self._keep(data[sent:])

    def _keep(self, rest: bytes) -> None:
        """Hold what the socket did not take; write it when it is writable again."""
        self.pending = bytearray(rest)
        self.state.ep.modify(self.fd, _IN | _OUT)

    def _flush(self) -> None:
        assert self.sock is not None and self.pending is not None
        try:
            sent = self.sock.send(self.pending)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"send: {exc}")
            return
        del self.pending[:sent]
        if not self.pending:
            self.pending = None
            self.state.ep.modify(self.fd, _IN)

    # -- ending ----------------------------------------------------------------------------------

    def time_out(self) -> None:
        """The phase's deadline passed: a setup fails; a ``stop`` left unanswered just ends."""
        if self.phase == Phase.STOPPING:
            self._end()
        elif self.phase <= Phase.RINGING:
            self.fail(f"no webhook answer within {self.state.plan.setup_timeout:g} s")
        else:
            self.fail(f"no handshake answer within {self.state.plan.setup_timeout:g} s")

    def fail(self, error: str) -> None:
        """End the call with ``error`` recorded (the first error counts)."""
        if self.phase == Phase.DONE:
            return
        if self.record.error is None:
            self.record.error = error
        self.record.outcome = "failed"
        self._end()

    def _end(self) -> None:
        state = self.state
        phase = self.phase
        if phase == Phase.DONE:
            return
        if Phase.RING_CONNECT <= phase <= Phase.HANDSHAKE:
            state.setting_up -= 1
        elif phase == Phase.STREAMING or phase == Phase.DRAINING:
            state.streaming -= 1
        if self.record.outcome == "pending":
            self.record.outcome = "admitted"
        if self.record.error is None:
            self.record.phase = "done"
        self.phase = Phase.DONE
        self.deadline = float("inf")
        state.active -= 1
        self._close_socket()

    def _close_socket(self) -> None:
        if self.sock is not None:
            self.state.by_fd.pop(self.fd, None)
            with contextlib.suppress(OSError, ValueError):  # never registered: connect failed
                self.state.ep.unregister(self.fd)
            self.sock.close()
            self.sock, self.fd, self.pending = None, -1, None
        self.tls = None

    def close(self) -> None:
        """Release the socket (the run is over)."""
        self._close_socket()
