"""The Twilio side of one load call: the webhook, the handshake, the stream.

:class:`Call` extends :class:`~engine.testing.load_call.CallSocket` (the socket and the
lifecycle) with what Twilio does: POST the signed voice webhook and follow its TwiML (a refusal
is an outcome, not an error), shake hands, send ``connected`` and ``start``, then one ``media``
frame per 20 ms on its own slot of the 20 ms, mark echoes once the audio before them has played
(a playback clock), ``clear`` honoured, ``stop`` after a short drain. :meth:`Call.tick` runs
when the loop finds the call's next frame due; :meth:`Call.received` takes the server's bytes.
"""

from __future__ import annotations

import binascii
import heapq
import math
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Final

import numpy as np

from engine.testing.load_call import FRAME_S, CallSocket, LoopState, Phase
from engine.testing.load_http import (
    Refusal,
    WebhookExchange,
    handshake_request,
    read_handshake,
)
from engine.testing.load_wire import (
    CLEAR,
    MEDIA,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    CallMessages,
    ServerFrameDecoder,
    WireError,
    client_frame,
    close_payload,
    payload_size,
    read_outbound,
)

if TYPE_CHECKING:
    from engine.testing.load import LoadCall

__all__ = ["SOUND_RMS", "Call", "sound_offset_ms"]

_clock = time.monotonic
_GOLDEN: Final = 0.6180339887498949
SOUND_RMS: Final = 300.0
"""A 20 ms of received audio whose RMS level exceeds this (about −40 dBFS, the threshold of
:func:`engine.testing.speech_bounds`) carries sound."""


def _ulaw_squares() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int64) & 0xFF
    exponent, mantissa = (codes >> 4) & 7, codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return (magnitude * magnitude).astype(np.float64)


_SQUARES: Final = _ulaw_squares()


def sound_offset_ms(ulaw: bytes) -> int:
    """Where sound begins in ``ulaw`` (ms, by whole 20 ms frames; a shorter message is one
    frame), or −1 if no frame's RMS exceeds :data:`SOUND_RMS`."""
    if not ulaw:
        return -1
    squares = _SQUARES[np.frombuffer(ulaw, dtype=np.uint8)]
    frames = max(1, len(ulaw) // 160)
    if len(ulaw) < 160:
        means = squares.mean(keepdims=True)
    else:
        means = squares[: frames * 160].reshape(frames, 160).mean(axis=1)
    loud = np.flatnonzero(means > SOUND_RMS * SOUND_RMS)
    return int(loud[0]) * 20 if len(loud) else -1


class Call(CallSocket):
    """One emulated call (see the module docstring)."""

    __slots__ = (
        "account_sid",
        "bidirectional",
        "closing_sent",
        "decoder",
        "drain_end",
        "echo_index",
        "echo_prefix",
        "head",
        "k",
        "key",
        "lateness",
        "marks",
        "messages",
        "next_due",
        "parameters",
        "play_end",
        "sent",
        "seq",
        "sid",
        "t0",
        "webhook",
    )

    def __init__(self, index: int, record: LoadCall, state: LoopState) -> None:
        super().__init__(index, record, state)
        self.webhook: WebhookExchange | None = None
        self.head = b""
        self.key = b""
        self.account_sid = ""
        self.parameters: dict[str, str] = {}
        self.bidirectional = True
        self.messages: CallMessages | None = None
        self.sid = b""
        self.decoder = ServerFrameDecoder()
        self.seq = self.k = self.echo_index = 0
        self.t0 = self.next_due = self.drain_end = self.play_end = 0.0
        self.marks: deque[tuple[float, str]] = deque()
        self.closing_sent = False
        self.echo_prefix = b""
        self.lateness = record.lateness.append
        self.sent = record.sent.append

    # -- setting up ------------------------------------------------------------------------------

    def ring(self, webhook_url: str, call_sid: str) -> None:
        """Start the call with the signed voice webhook POST to ``webhook_url``."""
        self._begin(call_sid)
        self.webhook = WebhookExchange(
            webhook_url,
            self.state.plan.auth_token,
            call_sid=call_sid,
            account_sid=self.account_sid,
        )
        self.record.phase = "ringing"
        self._connect(webhook_url, Phase.RING_CONNECT, self.webhook.request())

    def dial(self, stream_url: str, call_sid: str, parameters: dict[str, str]) -> None:
        """Start the call at its stream (no webhook), with ``parameters`` as customParameters."""
        self._begin(call_sid)
        self._dial(stream_url, parameters)

    def _begin(self, call_sid: str) -> None:
        self.phase = Phase.RING_CONNECT  # setting up (counted) from here
        self.record.call_sid = call_sid
        self.account_sid = "AC" + secrets.token_hex(16)
        self.state.active += 1
        self.state.setting_up += 1

    def _dial(self, stream_url: str, parameters: dict[str, str]) -> None:
        self.phase = Phase.WS_CONNECT
        self.parameters = parameters
        self.record.phase = "handshake"
        try:
            request, self.key = handshake_request(stream_url, self.state.plan.auth_token)
        except WireError as exc:
            self.fail(str(exc))
            return
        self._connect(stream_url, Phase.WS_CONNECT, request)

    def answered(self, data: bytes) -> None:
        """Follow the webhook's answer: a refusal ends the call, a stream is dialled."""
        assert self.webhook is not None
        try:
            answer = self.webhook.feed(data)
        except WireError as exc:
            self.fail(str(exc))
            return
        if answer is None:
            return
        self._close_socket()
        if isinstance(answer, Refusal):
            self.record.outcome = "refused"
            self.record.refusal = answer.reason
            self._end()
            return
        self.bidirectional = self.record.bidirectional = answer.bidirectional
        self._dial(answer.url, answer.parameters)

    def shaken(self, data: bytes) -> None:
        """Check the handshake's answer; once accepted, start streaming."""
        self.head += data
        try:
            rest = read_handshake(self.head, self.key)
        except WireError as exc:
            self.fail(str(exc))
            return
        if rest is None:
            if not data:
                self.fail("the server closed the connection during the handshake")
            return
        self.head = b""
        state = self.state
        state.setting_up -= 1
        state.streaming += 1
        state.peak_streaming = max(state.peak_streaming, state.streaming)
        self.phase = Phase.STREAMING
        self.record.phase = "streaming"
        self.deadline = float("inf")
        call_sid = self.record.call_sid
        self.messages = messages = CallMessages(
            "MZ" + call_sid[2:], self.account_sid, call_sid, state.b64
        )
        self.sid = messages.stream_sid.encode()
        if state.b64_length and not state.plan.record_replies:
            self.echo_prefix = messages.echo_prefix(state.b64_length)
        self.seq = 1
        now = _clock()
        # Real calls start at random moments, so their frames are spread over the 20 ms; the
        # ramp (or a burst) would bunch them. Each call's frames get their own slot in the 20 ms
        # (a golden-ratio sequence: evenly spread for any number of calls); the first frame
        # follows ``start`` by less than 20 ms.
        slot = state.epoch + (self.index * _GOLDEN % 1.0) * FRAME_S
        self.t0 = self.next_due = slot + math.ceil((now - slot) / FRAME_S) * FRAME_S
        self._send(
            client_frame(messages.connected()) + client_frame(messages.start(1, self.parameters))
        )
        if self.phase == Phase.DONE:
            return
        heapq.heappush(state.heap, (self.t0, self.index))
        if rest:
            self.received(rest, self.state.polled_at)

    # -- streaming -------------------------------------------------------------------------------

    def tick(self) -> None:
        """Send what is due: media frames (catching up if late), mark echoes, ``stop``."""
        if self.phase != Phase.STREAMING or self.marks or self.pending is not None:
            self._tick()
            return
        # The common case, kept lean: one frame (or a few, if late) and nothing else.
        t = _clock()
        due, k, seq = self.next_due, self.k, self.seq
        horizon = t + self.state.early
        last = self.state.total - 1
        if k >= last:
            self._tick()
            return
        messages, n, t0 = self.messages, self.state.frame_count, self.t0
        lateness, sent = self.lateness, self.sent
        data = b""
        while due <= horizon and k < last:
            lateness(t - due)
            sent(t)
            seq += 1
            frame = messages.media_frame(seq, k + 1, k * 20, k % n)  # type: ignore[union-attr]
            data = data + frame if data else frame
            k += 1
            due = t0 + k * FRAME_S
        self.next_due, self.k, self.seq = due, k, seq
        if data:
            if self.tls is not None:
                self._send(data)
                if self.phase == Phase.DONE:
                    return
            else:
                try:
                    written = self.sock.send(data)  # type: ignore[union-attr]
                except BlockingIOError:
                    written = 0
                except OSError as exc:
                    self.fail(f"send: {exc}")
                    return
                if written < len(data):
                    self._keep(data[written:])
        heapq.heappush(self.state.heap, (due, self.index))

    def _tick(self) -> None:
        phase = self.phase
        if phase != Phase.STREAMING and phase != Phase.DRAINING:
            return  # a stale heap entry of a call that ended
        messages = self.messages
        assert messages is not None
        record = self.record
        state = self.state
        t = _clock()
        parts: list[bytes] = []
        if phase == Phase.STREAMING:
            total, n = state.total, state.frame_count
            due, k, seq, t0 = self.next_due, self.k, self.seq, self.t0
            horizon = t + state.early
            while due <= horizon and k < total:
                record.lateness.append(t - due)
                record.sent.append(t)
                seq += 1
                parts.append(messages.media_frame(seq, k + 1, k * 20, k % n))
                k += 1
                due = t0 + k * FRAME_S
            self.next_due, self.k, self.seq = due, k, seq
            if k >= total:
                self.phase = Phase.DRAINING
                record.phase = "draining"
                self.drain_end = t + state.plan.drain
        marks = self.marks
        while marks and marks[0][0] <= t:
            parts.append(self._mark_echo(marks.popleft()[1]))
        if self.phase == Phase.DRAINING and t + state.early >= self.drain_end:
            self.seq += 1
            parts.append(client_frame(messages.stop(self.seq)))
            self.phase = Phase.STOPPING
            record.phase = "stopping"
            state.streaming -= 1
            self.deadline = t + state.plan.stop_timeout
        if parts:
            self._send(parts[0] if len(parts) == 1 else b"".join(parts))
        if self.phase == Phase.STREAMING:
            heapq.heappush(state.heap, (self.next_due, self.index))
        elif self.phase == Phase.DRAINING:
            heapq.heappush(state.heap, (min(t + FRAME_S, self.drain_end), self.index))

    def _mark_echo(self, name: str) -> bytes:
        assert self.messages is not None
        self.seq += 1
        self.record.marks += 1
        return client_frame(self.messages.mark(self.seq, name))

    def received(self, data: bytes, t: float) -> None:
        """Take the stream's bytes; ``t`` is when they arrived."""
        record = self.record
        prefix = self.echo_prefix
        if prefix and self.decoder.idle:
            # The common case, without the decoder: the exact echo of the frame sent at this
            # position, framed and written as the engine writes it.
            tails = self.state.echo_tails
            n, seconds, at, end = len(tails), self.state.frame_seconds, 0, len(data)
            skip, matched = len(prefix), 0
            while at < end and data.startswith(prefix, at):
                tail = tails[self.echo_index % n]
                if not data.startswith(tail, at + skip):
                    break
                record.echoed.append(t)
                self.echo_index += 1
                matched += 1
                self.play_end = (t if t > self.play_end else self.play_end) + seconds
                at += skip + len(tail)
            if matched:
                record.echo_bytes += matched * self.state.frame_bytes
                if at == end:
                    return
                data = data[at:]
        try:
            items = self.decoder.feed(data)
        except WireError as exc:
            self.fail(f"protocol error: {exc}")
            return
        out: list[bytes] = []
        for opcode, payload in items:
            if opcode == OP_TEXT:
                try:
                    kind, value = read_outbound(payload, self.sid)
                except WireError as exc:
                    self.fail(f"protocol error: {exc}")
                    return
                if kind == MEDIA:
                    record.echoed.append(t)
                    b64 = self.state.b64
                    expected = b64[self.echo_index % len(b64)]
                    self.echo_index += 1
                    if value != expected:
                        record.mismatched += 1
                    size = payload_size(value)
                    record.echo_bytes += size
                    starts = t if t > self.play_end else self.play_end
                    if self.state.plan.record_replies:
                        record.heard.append(starts)
                        record.reply_bytes.append(size)
                        record.sound_ms.append(sound_offset_ms(binascii.a2b_base64(value)))
                    self.play_end = starts + size / 8000
                elif kind == CLEAR:
                    record.clears.append(t)
                    self.play_end = t
                    while self.marks:
                        out.append(self._mark_echo(self.marks.popleft()[1]))
                elif self.phase != Phase.STOPPING:  # a mark: echoed once what precedes played
                    name = value.decode("utf-8", "replace")
                    if self.play_end <= t and not self.marks:
                        out.append(self._mark_echo(name))
                    else:
                        self.marks.append((max(self.play_end, t), name))
            elif opcode == OP_CLOSE:
                self._closed_by_server(payload)
                return
            elif opcode == OP_PING:
                out.append(client_frame(payload, 0xA))
            elif opcode == OP_BINARY:
                self.fail("protocol error: a binary frame (Media Streams use text)")
                return
        if out:
            self._send(b"".join(out))

    def _closed_by_server(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        self.record.close_code = code
        if not self.closing_sent:
            self.closing_sent = True
            self._send(client_frame(close_payload(1000 if code == 1005 else code), OP_CLOSE))
        if self.phase == Phase.STOPPING:
            self._end()
        else:
            self.fail(f"the server closed the stream while {Phase.NAMES[self.phase]} (code {code})")
