"""Observing a call's frame path from outside its loop, as a trio ``Instrument`` observes tasks.

The session composes a call's steps — the socket, the parser, μ-law decode, the turn detector,
the stage's per-frame handler, playout's pump — and hands them to its loop. A
:class:`CallProbe` wraps some of those steps before the loop gets them, so the loop itself
holds no timing code and a call that is not observed pays nothing:

- every call with turn detection is watched for **turn latency** (the caller's speech ended →
  the first reply audio written), a per-turn figure;
- one call in ``SessionConfig.probe_every`` is **timed**: one inbound message in
  ``SAMPLE_EVERY`` has its steps timed (``decode``, ``vad``, ``stage``, ``encode``, ``socket``)
  and, for stages that answer frame by frame, the **round trip** inside the engine from the
  message read to the reply written.

Figures go to the Prometheus histograms of :mod:`engine.metrics`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import ParamSpec, TypeVar

from engine.media.frames import PCM, SpeechEnded, SpeechStarted
from engine.media.socket import MediaSocket
from engine.media.vad import TurnEvent
from engine.metrics import FRAME_ROUND_TRIP, FRAME_STEP, TURN_LATENCY

__all__ = ["SAMPLE_EVERY", "CallProbe", "ObservedSocket"]

SAMPLE_EVERY = 8
"""In a timed call, one inbound message in this many has its steps timed."""
ROUND_TRIP_HORIZON_S = 1.0
"""A reply written later than this after the sampled message was not caused by it."""
_MEDIA_PREFIX = '{"event":"media"'

TurnProcess = Callable[[PCM, int], tuple[TurnEvent, ...]]


def _is_media(message: str | bytes) -> bool:
    """Whether an inbound message is a ``media`` one (Twilio writes ``event`` first)."""
    return isinstance(message, str) and '"media"' in message[:24]


P = ParamSpec("P")
R = TypeVar("R")


class CallProbe:
    """What is observed of one call; build the call's steps through it."""

    __slots__ = ("_received_at", "_sampling", "_tick", "_turn_ended_at", "round_trip", "timed")

    def __init__(self, *, timed: bool, round_trip: bool) -> None:
        self.timed = timed
        """Whether this call's steps are timed (one message in :data:`SAMPLE_EVERY`)."""
        self.round_trip = timed and round_trip
        """Whether replies are timed against the message that caused them (per-frame stages)."""
        self._tick = 0
        self._sampling = False
        self._received_at = 0.0
        self._turn_ended_at = 0.0

    def step(self, name: str, fn: Callable[P, R]) -> Callable[P, R]:
        """``fn`` as the step ``name``: timed on sampled messages when the call is timed."""
        if not self.timed:
            return fn
        histogram = FRAME_STEP.labels(name)

        def timed_step(*args: P.args, **kwargs: P.kwargs) -> R:
            if not self._sampling:
                return fn(*args, **kwargs)
            t0 = perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                histogram.observe(perf_counter() - t0)

        return timed_step

    def async_step(self, name: str, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """:meth:`step` for a coroutine function (the stage's inline ``on_audio``)."""
        if not self.timed:
            return fn
        histogram = FRAME_STEP.labels(name)

        async def timed_step(*args: P.args, **kwargs: P.kwargs) -> R:
            if not self._sampling:
                return await fn(*args, **kwargs)
            t0 = perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                histogram.observe(perf_counter() - t0)

        return timed_step

    def turns(self, process: TurnProcess) -> TurnProcess:
        """The turn detector's ``process``, watched for the ends of the caller's turns."""

        def watched(pcm: PCM, timestamp: int) -> tuple[TurnEvent, ...]:
            events = process(pcm, timestamp)
            for event in events:
                if type(event) is SpeechEnded:
                    self._turn_ended_at = perf_counter()
                elif type(event) is SpeechStarted:
                    self._turn_ended_at = 0.0
            return events

        return watched

    def socket(self, socket: MediaSocket) -> ObservedSocket:
        """``socket`` seen through this probe."""
        return ObservedSocket(socket, self)

    # -- what the observed socket reports ------------------------------------------------------

    def _received(self, message: str | bytes) -> None:
        self._tick += 1
        self._sampling = self.timed and not self._tick % SAMPLE_EVERY
        # Only a media frame causes the reply it is timed against: a sampled mark or start
        # would be paired with the echo of the next frame, up to 20 ms later.
        if self._sampling and self.round_trip and _is_media(message):
            self._received_at = perf_counter()

    def _sent(self, messages: list[str], started: float) -> None:
        if not (self._received_at or self._turn_ended_at):
            return
        if not any(m.startswith(_MEDIA_PREFIX) for m in messages):
            return
        now = perf_counter()
        if self._received_at:
            if now - self._received_at < ROUND_TRIP_HORIZON_S:
                FRAME_ROUND_TRIP.observe(now - self._received_at)
                FRAME_STEP.labels("socket").observe(now - started)
            self._received_at = 0.0
        if self._turn_ended_at:
            TURN_LATENCY.observe(now - self._turn_ended_at)
            self._turn_ended_at = 0.0


class ObservedSocket:
    """A media socket that tells its :class:`CallProbe` when messages come and go."""

    __slots__ = ("_inner", "_probe")

    def __init__(self, inner: MediaSocket, probe: CallProbe) -> None:
        self._inner = inner
        self._probe = probe

    async def receive(self) -> str | bytes:
        """The next message (the probe notes it)."""
        message = await self._inner.receive()
        self._probe._received(message)
        return message

    async def send_many(self, messages: list[str]) -> None:
        """Send messages in order (the probe times replies)."""
        started = perf_counter()
        await self._inner.send_many(messages)
        self._probe._sent(messages, started)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket."""
        await self._inner.close(code, reason)
