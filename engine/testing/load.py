"""A lean emulated Twilio for load: many calls per process, one trio task pair per call.

:class:`~engine.testing.stream.EmulatedStream` records everything a test may ask about; this
records only what a benchmark needs — when each 20 ms frame left and when its echo came back,
marks, clears and how the socket closed — so that one process can drive hundreds of calls
without becoming the bottleneck it is measuring. It speaks the same protocol: a signed voice
webhook, the TwiML's stream URL, a signed handshake, ``connected``/``start``, real-time ``media``
frames with Twilio's counters, marks echoed on a playback clock, ``clear`` honoured, ``stop``.
"""

from __future__ import annotations

import base64
import json
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    RejectConnection,
    Request,
    TextMessage,
)

from engine.control.signature import compute_signature
from engine.testing import twilio_side
from engine.testing.caller import ring

__all__ = ["LoadCall", "run_load_call"]

FRAME_S = 0.020


@dataclass
class LoadCall:
    """What one load call measured; times are ``trio.current_time()`` seconds."""

    call_sid: str = ""
    sent: array[float] = field(default_factory=lambda: array("d"))
    """When each media frame left (index = chunk − 1)."""
    lateness: array[float] = field(default_factory=lambda: array("d"))
    """How late each frame left against its real-time slot."""
    echoed: array[float] = field(default_factory=lambda: array("d"))
    """Arrival of each outbound media message, in order."""
    echo_bytes: int = 0
    mismatched: int = 0
    """Echoed frames whose payload differs from the frame sent at that position."""
    marks: int = 0
    clears: list[float] = field(default_factory=list)
    close_code: int | None = None
    error: str | None = None
    phase: str = "ringing"
    """Where the call is: ringing, handshake, streaming, stopping, closed."""


async def run_load_call(
    public_url: str,
    auth_token: str | None,
    frames: Sequence[bytes],
    duration: float,
    record: LoadCall,
    client: httpx.AsyncClient | None = None,
) -> None:
    """Ring ``public_url``, stream ``frames`` (160-byte μ-law, cycled) for ``duration`` seconds,
    then ``stop``; fill ``record``. Errors are recorded, not raised. Share one ``client``
    between calls: making an HTTP client takes milliseconds of CPU."""
    try:
        # A call stuck anywhere (a peer that stops reading or answering) fails, counted, rather
        # than hold up the whole run.
        with trio.fail_after(duration + CALL_SLACK_S):
            call = await ring(public_url, auth_token, client=client)
            record.call_sid = call.call_sid
            record.phase = "handshake"
            await _stream(
                call.connect.url,
                call.connect.parameters,
                call.call_sid,
                call.account_sid,
                auth_token,
                frames,
                duration,
                record,
            )
            record.phase = "closed"
    except trio.TooSlowError:
        record.error = f"TooSlowError: stuck while {record.phase}"
    except Exception as exc:  # a benchmark counts failures instead of stopping
        record.error = f"{type(exc).__name__}: {exc}"


CALL_SLACK_S = 60.0
"""Time a call may take beyond its duration (ringing, handshake, lateness, closing)."""
HANDSHAKE_TIMEOUT_S = 10.0
"""A handshake the server leaves unanswered this long fails the call (it is counted)."""


async def _stream(
    url: str,
    parameters: dict[str, str],
    call_sid: str,
    account_sid: str,
    auth_token: str | None,
    frames: Sequence[bytes],
    duration: float,
    record: LoadCall,
) -> None:
    parts = urlsplit(url)
    stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
    ws = WSConnection(ConnectionType.CLIENT)
    headers = []
    if auth_token is not None:
        headers.append((b"X-Twilio-Signature", compute_signature(url, {}, auth_token).encode()))
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    await stream.send_all(ws.send(Request(host=parts.netloc, target=target, extra_headers=headers)))
    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError("closed during the handshake")
            ws.receive_data(data)
            event = next(
                (e for e in ws.events() if isinstance(e, AcceptConnection | RejectConnection)),
                None,
            )
            if isinstance(event, RejectConnection):
                raise ConnectionError(f"handshake refused: HTTP {event.status_code}")
            if event is not None:
                break
    stream_sid = "MZ" + call_sid[2:]
    payloads = [base64.b64encode(f).decode() for f in frames]
    marks: deque[tuple[float, str]] = deque()  # (due, name)
    done = trio.Event()

    async def send(text: str) -> None:
        await stream.send_all(ws.send(Message(data=text)))

    async def receive() -> None:
        play_end = 0.0
        buffered = ""
        index = 0
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            ws.receive_data(data)
            now = trio.current_time()
            for event in ws.events():
                if isinstance(event, CloseConnection):
                    record.close_code = event.code
                    done.set()
                    return
                if not isinstance(event, TextMessage):
                    continue
                buffered += event.data
                if not event.message_finished:
                    continue
                message, buffered = json.loads(buffered), ""
                kind = message.get("event")
                if kind == "media":
                    payload = message["media"]["payload"]
                    record.echoed.append(now)
                    if payload != payloads[index % len(payloads)]:
                        record.mismatched += 1
                    index += 1
                    size = len(payload) * 3 // 4 - payload.count("=")
                    record.echo_bytes += size
                    play_end = max(now, play_end) + size / 8000
                elif kind == "mark":
                    marks.append((max(now, play_end), message["mark"]["name"]))
                elif kind == "clear":
                    record.clears.append(now)
                    play_end = now
                    for i, (_, name) in enumerate(marks):
                        marks[i] = (now, name)

    sequence = 0

    async def numbered(build: object) -> None:
        nonlocal sequence
        sequence += 1
        await send(build(sequence))  # type: ignore[operator]

    await send(twilio_side.connected_message())
    await numbered(
        lambda seq: twilio_side.start_message(seq, stream_sid, account_sid, call_sid, parameters)
    )
    record.phase = "streaming"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        t0 = trio.current_time()
        total = int(duration / FRAME_S)
        for k in range(total):
            due = t0 + k * FRAME_S
            await trio.sleep_until(due)
            if done.is_set():
                break
            now = trio.current_time()
            record.lateness.append(now - due)
            sequence += 1
            text = twilio_side.inbound_media_message(
                sequence, stream_sid, k + 1, k * 20, frames[k % len(frames)]
            )
            await send(text)
            record.sent.append(trio.current_time())
            while marks and marks[0][0] <= now:
                _, name = marks.popleft()
                record.marks += 1
                await numbered(
                    lambda seq, n=name: twilio_side.mark_echo_message(seq, stream_sid, n)
                )
        record.phase = "stopping"
        if not done.is_set():
            await trio.sleep(0.2)  # let the last echoes arrive
            await numbered(
                lambda seq: twilio_side.stop_message(seq, stream_sid, account_sid, call_sid)
            )
            with trio.move_on_after(2):
                await done.wait()
        nursery.cancel_scope.cancel()
    await stream.aclose()
