"""A lean emulated Twilio for load: hundreds of calls driven from one thread by one epoll loop.

:class:`~engine.testing.stream.EmulatedStream` records everything a test may ask about; this
records only what a benchmark needs — when each 20 ms frame left and when its echo came back,
marks, clears, how each call ended — so that one core can drive 400+ calls without becoming the
bottleneck it measures. Per call it does what Twilio does: the signed voice webhook (at most
``setup_concurrency`` calls setting up at once), the TwiML's ``<Stream>`` (a ``<Reject>`` is a
refusal, counted, not an error), a signed WebSocket handshake, ``connected``/``start``
(``customParameters``), one ``media`` frame every 20 ms on a real-time clock with Twilio's
counters, marks echoed once the audio before them has played (a playback clock), ``clear``
honoured, ``stop``. A ``ws://`` URL is dialled directly, with the plan's custom parameters;
``https://`` and ``wss://`` go over TLS (:mod:`~engine.testing.load_tls`).

No task per call: :func:`run_load` keeps every socket non-blocking in one :mod:`select.epoll`
and a heap of due frames, on a fixed tick (``LoadPlan.batch``, 1 ms): each tick it reads what
arrived (arrival times from the kernel's receive timestamps, so napping costs no precision) and
sends every frame due before the tick after next, all of a socket's bytes in one ``send``. Each
call's frames keep their own slot in the 20 ms (spread evenly, as independent calls would be).
Frames are built from templates and masked with the all-zero key; echoes are recognised by
comparing bytes with the expected frame. The pieces: :mod:`~engine.testing.load_wire` (frames
and messages), :mod:`~engine.testing.load_http` (webhook, TwiML, handshake),
:mod:`~engine.testing.load_call` (a call's socket and lifecycle) and
:mod:`~engine.testing.load_media` (what Twilio does on it).
"""

from __future__ import annotations

import heapq
import secrets
import select
import socket
import ssl
import time
from array import array
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from engine.testing.load_call import FRAME_S, TLS_SCHEMES, LoopState
from engine.testing.load_http import stream_target
from engine.testing.load_media import Call
from engine.testing.load_wire import WireError

__all__ = ["FRAME_S", "LoadCall", "LoadPlan", "LoadRun", "run_load"]


@dataclass
class LoadCall:
    """What one load call measured; times are :func:`time.monotonic` seconds."""

    call_sid: str = ""
    outcome: str = "pending"
    """``admitted`` (streamed, no error), ``refused`` (see :attr:`refusal`) or ``failed``."""
    refusal: str | None = None
    """Why the TwiML refused the call: ``reject:busy``, ``reject:rejected``, ``hangup``."""
    bidirectional: bool = True
    """``<Connect><Stream>`` (echoes expected) rather than ``<Start><Stream>``."""
    sent: array[float] = field(default_factory=lambda: array("d"))
    """When each media frame left (index = chunk − 1)."""
    lateness: array[float] = field(default_factory=lambda: array("d"))
    """How late each frame left against its real-time slot (negative: early, by up to two of
    the loop's ticks)."""
    echoed: array[float] = field(default_factory=lambda: array("d"))
    """Arrival of each outbound media message, in order."""
    echo_bytes: int = 0
    mismatched: int = 0
    """Echoed frames whose payload differs from the frame sent at that position."""
    marks: int = 0
    """Marks echoed back to the server."""
    clears: list[float] = field(default_factory=list)
    heard: array[float] = field(default_factory=lambda: array("d"))
    """With :attr:`LoadPlan.record_replies`: when each outbound media message (the
    :attr:`echoed` arrival of the same index) began to play at the caller's ear — the playback
    clock's time, later than its arrival while earlier audio still plays."""
    reply_bytes: array[int] = field(default_factory=lambda: array("i"))
    """With :attr:`LoadPlan.record_replies`: each outbound media message's audio bytes (at
    8 kHz μ-law, 8 per ms of playback)."""
    sound_ms: array[int] = field(default_factory=lambda: array("i"))
    """With :attr:`LoadPlan.record_replies`: for each outbound media message, where its sound
    begins — the offset (ms) of its first 20 ms above
    :data:`~engine.testing.load_media.SOUND_RMS` — or −1 when it is all near-silence."""
    close_code: int | None = None
    error: str | None = None
    phase: str = "waiting"
    """Where the call got to: waiting, ringing, handshake, streaming, draining, stopping, done."""


@dataclass(frozen=True)
class LoadPlan:
    """What :func:`run_load` does."""

    url: str
    """The server's ``http(s)://`` base URL (the webhook is ``url + webhook_path``), or a
    ``ws(s)://`` stream URL to dial directly."""
    calls: int
    duration: float
    """Seconds of 20 ms frames each call streams."""
    frames: Sequence[bytes]
    """160-byte μ-law frames, cycled."""
    auth_token: str | None = None
    """Signs the webhook and the handshake; ``None`` sends no signatures."""
    parameters: Mapping[str, str] = field(default_factory=dict)
    """``customParameters`` for a ``ws://`` URL (with a webhook, the TwiML's are sent)."""
    webhook_path: str = "/twilio/voice"
    """Appended to :attr:`url` for the voice webhook; ``""``: :attr:`url` is the webhook."""
    spacing: float = 0.005
    """Seconds between call starts; 0 starts them all at once (a burst)."""
    setup_concurrency: int = 64
    """Calls setting up (webhook and handshake) at once, at most."""
    setup_timeout: float = 10.0
    """A webhook answer or handshake later than this fails the call."""
    drain: float = 0.2
    """After the last frame, wait this long for echoes before ``stop``."""
    stop_timeout: float = 2.0
    """After ``stop``, wait this long for the server's close."""
    max_pending_bytes: int = 256 * 1024
    """Unsent bytes a call may hold while the server is not reading; beyond, it fails."""
    batch: float = 0.001
    """The loop's tick: it wakes this often, reads what arrived (arrival times from the kernel's
    receive timestamps) and sends the frames due within two ticks (up to that early).
    0 wakes for every arrival instead, timing with the clock (dearer in CPU at scale)."""
    ssl_context: ssl.SSLContext | None = None
    """For ``https://`` and ``wss://``: the client context (``None``: the system's CAs, the
    certificate and host name checked)."""
    record_replies: bool = False
    """Record when each outbound media message began to play, its length and where its sound
    begins (:attr:`LoadCall.heard`, :attr:`LoadCall.reply_bytes`, :attr:`LoadCall.sound_ms`):
    for measuring a voice agent's replies.
    Costs a base64 decode per message (echo byte-matching is then skipped)."""


@dataclass
class LoadRun:
    """The records, plus the generator's own wall and CPU time."""

    calls: list[LoadCall]
    wall_s: float
    cpu_s: float
    steady_cpu_share: float | None
    """CPU seconds per second while the most calls streamed at once (None if too short)."""
    peak_streaming: int


HOUSEKEEPING_S = 0.05
"""How often deadlines are checked and the CPU sampled."""


def run_load(plan: LoadPlan) -> LoadRun:
    """Run ``plan`` in this thread until every call has ended. A call's failure is recorded in
    its :class:`LoadCall`, never raised; a bad plan (URL) raises :class:`ValueError`."""
    return _Loop(plan).run()


class _Loop:
    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        scheme = urlsplit(plan.url).scheme
        self.direct = scheme in ("ws", "wss")
        if self.direct:
            try:
                stream_target(plan.url)
            except WireError as exc:
                raise ValueError(str(exc)) from None
        elif scheme not in ("http", "https") or not urlsplit(plan.url).hostname:
            raise ValueError(
                f"the load generator needs an http(s):// or ws(s):// URL, not {plan.url!r}"
            )
        self.webhook_url = (
            plan.url.rstrip("/") + plan.webhook_path if plan.webhook_path else plan.url
        )
        self.ep = select.epoll()
        self.heap: list[tuple[float, int]] = []
        self.state = LoopState(plan, self.ep, self.heap)
        self.state.resolve = self._resolve
        self.records = [LoadCall() for _ in range(plan.calls)]
        self.calls = [Call(i, self.records[i], self.state) for i in range(plan.calls)]
        self.waiting: deque[int] = deque(range(plan.calls))
        self.addresses: dict[tuple[str, int], tuple[socket.AddressFamily, tuple[Any, ...]]] = {}
        self.samples: list[tuple[float, float, int]] = []  # (wall, cpu, calls streaming)

    def run(self) -> LoadRun:
        clock, cpu, sleep = time.monotonic, time.process_time, time.sleep
        state, heap, calls, ep, waiting = self.state, self.heap, self.calls, self.ep, self.waiting
        by_fd, limit, spacing = state.by_fd, self.plan.setup_concurrency, self.plan.spacing
        period, early = self.plan.batch, state.early
        start, cpu_start = clock(), cpu()
        next_housekeeping = start
        try:
            while state.active or waiting:
                now = clock()
                if waiting:
                    self._start_due(now - start)
                horizon = now + early
                while heap and heap[0][0] <= horizon:
                    calls[heapq.heappop(heap)[1]].tick()
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_S
                    self._housekeeping(now)
                    state.realtime_offset = time.time() - clock()
                if period:
                    # A fixed tick: whatever arrived meanwhile is read at once (the kernel
                    # stamped its arrival); frames due before the next tick go out in this one.
                    pause = now + period - clock()
                    if pause > 0:
                        sleep(pause)
                    ready = ep.poll(0)
                else:
                    # Woken by each arrival; frames go out up to ``early`` ahead (epoll waits
                    # whole milliseconds), the other wake-ups are on time.
                    wake = next_housekeeping
                    if heap and heap[0][0] - early < wake:
                        wake = heap[0][0] - early
                    if waiting and state.setting_up < limit:
                        wake = min(wake, start + waiting[0] * spacing)
                    timeout = wake - clock()
                    ready = ep.poll(timeout if timeout > 0 else 0)
                state.polled_at = clock()
                for fd, events in ready:
                    call = by_fd.get(fd)
                    if call is not None:
                        call.on_event(events)
        finally:
            for call in calls:
                call.close()
            ep.close()
        wall, used = clock() - start, cpu() - cpu_start
        return LoadRun(self.records, wall, used, self._steady_share(), state.peak_streaming)

    def _start_due(self, elapsed: float) -> None:
        plan, state, waiting = self.plan, self.state, self.waiting
        while waiting and state.setting_up < plan.setup_concurrency:
            index = waiting[0]
            if index * plan.spacing > elapsed:
                return
            waiting.popleft()
            call_sid = "CA" + secrets.token_hex(16)
            if self.direct:
                self.calls[index].dial(plan.url, call_sid, dict(plan.parameters))
            else:
                self.calls[index].ring(self.webhook_url, call_sid)

    def _resolve(self, url: str) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
        parts = urlsplit(url)
        if not parts.hostname:
            raise WireError(f"no host in {url!r}")
        try:
            port = parts.port or (443 if parts.scheme in TLS_SCHEMES else 80)
        except ValueError:
            raise WireError(f"a bad port in {url!r}") from None
        key = (parts.hostname, port)
        address = self.addresses.get(key)
        if address is None:
            try:
                info = socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)
            except OSError as exc:
                raise WireError(f"cannot resolve {key[0]}: {exc}") from None
            address = self.addresses[key] = (info[0][0], info[0][4])
        return address

    def _housekeeping(self, now: float) -> None:
        self.samples.append((now, time.process_time(), self.state.streaming))
        for call in self.calls:
            if call.deadline <= now:
                call.time_out()

    def _steady_share(self) -> float | None:
        peak = self.state.peak_streaming
        at_peak = [(t, c) for t, c, n in self.samples if n == peak and peak]
        if len(at_peak) < 2 or at_peak[-1][0] - at_peak[0][0] < 0.5:
            return None
        (t0, c0), (t1, c1) = at_peak[0], at_peak[-1]
        return (c1 - c0) / (t1 - t0)
