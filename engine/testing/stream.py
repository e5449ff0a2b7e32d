"""Twilio's side of a Media Stream, emulated over a real WebSocket.

:class:`EmulatedStream` dials the server's stream URL (signing the handshake as Twilio does), sends
``connected`` and ``start``, then streams the caller's microphone: one 20 ms ``media`` frame every
20 ms on a real-time clock — speech you :meth:`~EmulatedStream.say`, silence in between — with
``sequenceNumber``, ``chunk`` and ``timestamp`` counted as Twilio counts them. Towards the caller's
ear it behaves like Twilio's playback buffer: ``media`` from the server is queued and played in
real time, a ``mark`` is echoed when the audio queued before it has played, and ``clear`` empties
the buffer (echoing the pending marks). :class:`StreamRecord` keeps what happened, with times.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial

import trio
import trio_websocket

from engine.control.signature import compute_signature
from engine.errors import ProtocolError
from engine.media.codec import FRAME_BYTES, SILENCE_BYTE
from engine.testing import twilio_side

__all__ = ["EmulatedStream", "StreamRecord", "new_sid", "open_stream"]

log = logging.getLogger(__name__)
FRAME_S = 0.020
_SILENCE = bytes([SILENCE_BYTE]) * FRAME_BYTES
_Builder = Callable[[int], str]  # sequence number → message


def new_sid(prefix: str) -> str:
    """A random SID of Twilio's form: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


@dataclass
class StreamRecord:
    """What one emulated stream sent, heard and received. Times are ``trio.current_time()``."""

    stream_sid: str
    t0: float = 0.0
    """When media frame 0 (timestamp 0) was due."""
    frames_sent: int = 0
    mic: bytearray = field(default_factory=bytearray)
    """Every μ-law byte the caller's microphone sent, in order."""
    send_lateness: list[float] = field(default_factory=list)
    """How late each media frame left against its real-time slot (s)."""
    heard: bytearray = field(default_factory=bytearray)
    """The caller's speaker, 160 μ-law bytes per 20 ms playback tick, tick k at ``t0 + k·20 ms``."""
    played: bytearray = field(default_factory=bytearray)
    """One byte per playback tick: 1 where server audio played (silent or not), else 0."""
    received: list[tuple[float, bytes]] = field(default_factory=list)
    """Every outbound ``media`` payload with its arrival time."""
    marks: list[tuple[str, float, float]] = field(default_factory=list)
    """(name, received at, echoed at) for every mark."""
    clears: list[tuple[float, int]] = field(default_factory=list)
    """(arrival time, timestamp of the last media frame sent by then) for every ``clear``."""
    errors: list[str] = field(default_factory=list)
    """Protocol errors in what the server sent."""
    close_code: int | None = None
    close_reason: str | None = None
    closed_by_server: bool = False
    """Whether the server closed the stream before the caller sent ``stop``."""

    def heard_ms(self) -> int:
        """How much non-silent bot audio the caller heard."""
        return sum(
            20
            for i in range(0, len(self.heard), FRAME_BYTES)
            if self.heard[i : i + FRAME_BYTES] != _SILENCE
        )

    def first_heard_at(self, after_ms: int = 0) -> int | None:
        """Media time (ms) of the first non-silent tick at or after ``after_ms``, if any."""
        for i in range(after_ms // 20 * FRAME_BYTES, len(self.heard), FRAME_BYTES):
            if self.heard[i : i + FRAME_BYTES] != _SILENCE:
                return i // FRAME_BYTES * 20
        return None


class EmulatedStream:
    """A live emulated stream; made by :func:`open_stream`."""

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        *,
        stream_sid: str,
        account_sid: str,
        call_sid: str,
    ) -> None:
        self._ws = ws
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.record = StreamRecord(stream_sid=stream_sid)
        self._seq = 0
        self._mic: deque[bytes] = deque()
        self._mic_empty = trio.Event()
        self._mic_empty.set()
        self._buffer: deque[bytes | str] = deque()  # playback: audio chunks and mark names
        self._send_lock = trio.Lock()
        self._mark_index: dict[str, int] = {}
        self._stopped = False
        self._silent = False
        self._last_timestamp = 0
        self.closed = trio.Event()
        """Set when the socket has closed (either side)."""

    @property
    def stream_sid(self) -> str:
        """This stream's MZ SID."""
        return self.record.stream_sid

    # -- the caller's mouth ---------------------------------------------------------------------

    async def say(self, ulaw: bytes) -> None:
        """Queue μ-law audio on the caller's microphone and wait until it has all been sent."""
        for i in range(0, len(ulaw), FRAME_BYTES):
            frame = ulaw[i : i + FRAME_BYTES]
            self._mic.append(frame.ljust(FRAME_BYTES, bytes([SILENCE_BYTE])))
        self._mic_empty = trio.Event()
        await self._mic_empty.wait()

    async def pause(self, seconds: float) -> None:
        """Let the microphone carry silence for ``seconds``."""
        await trio.sleep(seconds)

    async def dtmf(self, digit: str) -> None:
        """Press a key (sent as Twilio's ``dtmf`` message)."""
        await self._send(lambda seq: twilio_side.dtmf_message(seq, self.stream_sid, digit))

    def now_ms(self) -> int:
        """The media time now (ms since frame 0)."""
        return int((trio.current_time() - self.record.t0) * 1000)

    async def _send(self, build: _Builder) -> None:
        async with self._send_lock:
            if self._silent:
                await trio.sleep_forever()
            if self._stopped:
                raise trio_websocket.ConnectionClosed(trio_websocket.CloseReason(1000, "stopped"))
            self._seq += 1
            await self._ws.send_message(build(self._seq))

    async def _microphone(self) -> None:
        record = self.record
        chunk = 0
        next_due = record.t0
        while True:
            await trio.sleep_until(next_due)
            record.send_lateness.append(trio.current_time() - next_due)
            frame = self._mic.popleft() if self._mic else _SILENCE
            if not self._mic:
                self._mic_empty.set()
            chunk += 1
            timestamp = (chunk - 1) * 20
            try:
                await self._send(
                    partial(
                        twilio_side.inbound_media_message,
                        stream_sid=self.stream_sid,
                        chunk=chunk,
                        timestamp=timestamp,
                        payload=frame,
                    )
                )
            except trio_websocket.ConnectionClosed:
                return  # the receiver records how it closed and ends the stream
            self._last_timestamp = timestamp
            record.frames_sent += 1
            record.mic += frame
            next_due += FRAME_S

    # -- the caller's ear -----------------------------------------------------------------------

    async def _receiver(self) -> None:
        record = self.record
        try:
            while True:
                message = await self._ws.get_message()
                now = trio.current_time()
                try:
                    event = twilio_side.parse_outbound(message)
                except ProtocolError as exc:
                    record.errors.append(str(exc))
                    continue
                if event.stream_sid != self.stream_sid:
                    record.errors.append(f"streamSid {event.stream_sid!r} is not this stream's")
                    continue
                match event:
                    case twilio_side.OutMedia(payload=payload):
                        record.received.append((now, payload))
                        self._buffer.append(payload)
                    case twilio_side.OutMark(name=name):
                        self._mark_index[name] = len(record.marks)
                        record.marks.append((name, now, 0.0))
                        self._buffer.append(name)
                        await self._echo_ready_marks()
                    case twilio_side.OutClear():
                        record.clears.append((now, self._last_timestamp))
                        pending = [item for item in self._buffer if isinstance(item, str)]
                        self._buffer.clear()
                        for name in pending:
                            await self._echo_mark(name)
        except trio_websocket.ConnectionClosed as exc:
            record.closed_by_server = not self._stopped
            if exc.reason is not None:
                record.close_code = exc.reason.code
                record.close_reason = exc.reason.reason
            self.closed.set()

    async def _playback(self) -> None:
        record = self.record
        tick = 0
        while True:
            await trio.sleep_until(record.t0 + tick * FRAME_S)
            out = bytearray()
            while len(out) < FRAME_BYTES and self._buffer:
                head = self._buffer[0]
                if isinstance(head, str):
                    if out:
                        break  # the mark waits until the audio before it has played
                    self._buffer.popleft()
                    await self._echo_mark(head)
                    continue
                take = head[: FRAME_BYTES - len(out)]
                out += take
                if len(take) < len(head):
                    self._buffer[0] = head[len(take) :]
                else:
                    self._buffer.popleft()
            record.heard += out.ljust(FRAME_BYTES, bytes([SILENCE_BYTE]))
            record.played.append(1 if out else 0)
            tick += 1
            await self._echo_ready_marks()

    async def _echo_ready_marks(self) -> None:
        while self._buffer and isinstance(self._buffer[0], str):
            name = self._buffer.popleft()
            assert isinstance(name, str)
            await self._echo_mark(name)

    async def _echo_mark(self, name: str) -> None:
        index = self._mark_index.pop(name, None)
        if index is not None:
            mark, received, _ = self.record.marks[index]
            self.record.marks[index] = (mark, received, trio.current_time())
        with suppress(trio_websocket.ConnectionClosed):
            await self._send(lambda seq: twilio_side.mark_echo_message(seq, self.stream_sid, name))

    # -- ending ---------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Send ``stop`` (the call ended) and close the socket as Twilio does."""
        try:
            async with self._send_lock:
                if not self._stopped:
                    self._stopped = True
                    self._seq += 1
                    await self._ws.send_message(
                        twilio_side.stop_message(
                            self._seq, self.stream_sid, self.account_sid, self.call_sid
                        )
                    )
            await self._ws.aclose()
        except trio_websocket.ConnectionClosed:
            pass

    async def send_numbered(self, build: Callable[[int], str]) -> None:
        """Send ``build(sequence_number)`` with the stream's next sequence number."""
        await self._send(build)

    def go_silent(self) -> None:
        """Send nothing more — no audio, no mark echoes — with the connection left open, as a
        network partition or a stuck proxy would."""
        self._silent = True

    async def send_raw(self, message: str | bytes) -> None:
        """Send any message as it is — for testing how a server takes malformed input."""
        async with self._send_lock:
            await self._ws.send_message(message)

    async def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (a network failure)."""
        stream = self._ws._stream  # trio-websocket keeps the transport here
        await stream.aclose()


@asynccontextmanager
async def open_stream(
    url: str,
    *,
    auth_token: str | None,
    call_sid: str,
    account_sid: str,
    parameters: Mapping[str, str],
    tracks: tuple[str, ...] = ("inbound",),
) -> AsyncIterator[EmulatedStream]:
    """Connect to ``url`` as Twilio would and run the stream until the block exits.

    On exit ``stop`` is sent (unless the server already closed) and every task ends.
    """
    headers: list[tuple[bytes, bytes]] = []
    if auth_token is not None:
        signature = compute_signature(url, {}, auth_token)
        headers.append((b"X-Twilio-Signature", signature.encode()))
    stream_sid = new_sid("MZ")
    async with trio_websocket.open_websocket_url(
        url, extra_headers=headers, message_queue_size=64
    ) as ws:
        stream = EmulatedStream(
            ws, stream_sid=stream_sid, account_sid=account_sid, call_sid=call_sid
        )
        await ws.send_message(twilio_side.connected_message())
        await stream._send(
            lambda seq: twilio_side.start_message(
                seq, stream_sid, account_sid, call_sid, dict(parameters), tracks
            )
        )
        stream.record.t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream._receiver)

            async def until_closed() -> None:
                await stream.closed.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_closed)
            nursery.start_soon(stream._microphone)
            nursery.start_soon(stream._playback)
            try:
                yield stream
            finally:
                if not stream.closed.is_set():
                    with trio.move_on_after(1) as scope:
                        scope.shield = True
                        await stream.stop()
                nursery.cancel_scope.cancel()
