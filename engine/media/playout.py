"""Playout: pace the bot's audio to Twilio, track what the caller heard, and handle barge-in.

:class:`PlayoutCore` is sans-IO: it takes queued audio, Twilio's mark echoes and the time, and
returns the messages to send. It keeps only a small lead of audio queued at Twilio (``lead_ms``),
so a ``clear`` on barge-in takes effect at once. Its playback clock estimates where Twilio's
playback is; every ``mark_interval_ms`` of audio (and when a reply's audio runs out) it sends a
mark, and Twilio's echo of that mark re-anchors the clock. From the clock it knows how much of
each reply the caller actually heard.

Marks are named ``"<generation>.<byte position>"``; a ``clear`` starts a new generation, so the
marks Twilio echoes for cleared audio (§1.3: "played **or** dropped") are recognised and ignored.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Literal

import trio

from engine.media import protocol
from engine.media.channels import FrameChannel
from engine.media.frames import (
    Frame,
    HangUp,
    Interrupt,
    Interrupted,
    MarkEcho,
    PlayAudio,
    PlaybackDone,
    SpeechStarted,
)
from engine.metrics import FRAME_ROUND_TRIP, FRAME_STEP, TURN_LATENCY

__all__ = ["PlayoutConfig", "PlayoutCore", "PlayoutStatistics", "run_playout"]

BYTES_PER_MS = 8
FRAME_BYTES = 160
MARK_GRACE_S = 1.0
ROUND_TRIP_HORIZON_S = 1.0  # a reply later than this was not caused by the sampled frame
_ENCODE = FRAME_STEP.labels("encode")
_SOCKET = FRAME_STEP.labels("socket")
_EPS = 1e-9  # the playback clock sums float seconds; compare against it with this slack


@dataclass(frozen=True, slots=True)
class PlayoutConfig:
    """Tuning of playout; times in milliseconds."""

    lead_ms: int = 200
    """Audio kept queued at Twilio ahead of its playback position."""
    mark_interval_ms: int = 100
    """Send a mark after this much audio."""
    drain_mark_ms: int = 40
    """When the queue runs dry, wait this long for more before marking the end of a reply."""
    barge_in: bool = True
    """Send ``clear`` when the caller starts speaking over the bot."""
    max_queued_ms: int = 2000
    """Audio playout holds for the call beyond what it has sent; a stage that produces faster
    than real time waits in :meth:`~engine.media.stage.CallContext.play` while it is full."""
    paced: bool = True
    """Hold audio back to keep the lead; off for audio made in real time (echo), which is
    sent the moment it is queued so the round trip measures the engine, not the pacing."""


@dataclass(frozen=True, slots=True)
class PlayoutStatistics:
    """Counters of one call's playout."""

    sent_ms: int
    heard_ms: int
    marks_sent: int
    marks_echoed: int
    clears: int
    queued_ms: int


@dataclass(slots=True)
class _Segment:
    label: str
    start: int  # byte positions in the outbound stream
    end: int


class PlayoutCore:
    """The pacing and accounting logic of playout, with time passed in (seconds, monotonic)."""

    def __init__(self, stream_sid: str, config: PlayoutConfig | None = None) -> None:
        self.stream_sid = stream_sid
        self.config = config = config or PlayoutConfig()
        self._lead_s = config.lead_ms / 1000
        self._mark_every = config.mark_interval_ms * BYTES_PER_MS
        self._queue: deque[tuple[str, memoryview]] = deque()
        self._queued = 0
        self._max_queued = config.max_queued_ms * BYTES_PER_MS
        self._cut_label: str | None = None  # the reply a barge-in cut, while its audio trickles
        self._generation = 0
        self._sent = 0  # bytes sent in this generation
        self._marked = 0  # position of the last mark sent
        self._acked = 0  # position of the last mark echoed
        self._play_end = 0.0  # when the sent audio will have played, by the clock
        self._last_send = 0.0
        self._segments: deque[_Segment] = deque()
        self._heard_total = 0
        self._sent_total = 0
        self._marks_sent = 0
        self._marks_echoed = 0
        self._clears = 0

    # -- state --------------------------------------------------------------------------------

    def statistics(self) -> PlayoutStatistics:
        """Counters so far."""
        return PlayoutStatistics(
            sent_ms=self._sent_total // BYTES_PER_MS,
            heard_ms=self._heard_total // BYTES_PER_MS,
            marks_sent=self._marks_sent,
            marks_echoed=self._marks_echoed,
            clears=self._clears,
            queued_ms=self._queued // BYTES_PER_MS,
        )

    def is_playing(self, now: float) -> bool:
        """Whether bot audio is queued here, queued at Twilio, or still playing."""
        return now < self.idle_at()

    def idle_at(self) -> float:
        """When playback will be over if nothing more is queued (``math.inf`` while queued).

        An unechoed mark keeps playback alive for up to ``MARK_GRACE_S`` past the clock's end:
        the echo is the proof, the clock the fallback for a peer that never echoes.
        """
        if self._queued:
            return math.inf
        if self._acked < self._sent:
            return self._play_end + MARK_GRACE_S
        return self._play_end

    def played_position(self, now: float) -> int:
        """Estimated byte position of Twilio's playback in this generation's stream."""
        remaining = max(0.0, self._play_end - now) * 8000
        return max(self._acked, self._sent - math.ceil(remaining))

    # -- inputs -------------------------------------------------------------------------------

    def has_room(self, pending: int = 0) -> bool:
        """Whether playout takes more audio now, with ``pending`` bytes already on their way."""
        return self._queued + pending < self._max_queued

    def enqueue(self, audio: PlayAudio) -> None:
        """Queue μ-law audio for playout.

        Audio of the reply a barge-in cut (same non-empty ``label``) that arrives after the cut
        is dropped: the caller has already interrupted it. A new label ends that.
        """
        if self._cut_label is not None:
            if audio.label == self._cut_label:
                return
            self._cut_label = None
        if audio.ulaw:
            self._queue.append((audio.label, memoryview(audio.ulaw)))
            self._queued += len(audio.ulaw)

    def pump(self, now: float) -> list[str]:
        """The messages to send now: media up to the lead, marks as due."""
        out: list[str] = []
        sid = self.stream_sid
        while self._queue and (self._play_end - now < self._lead_s - _EPS or not self.config.paced):
            label, data = self._queue[0]
            chunk = data[:FRAME_BYTES]
            if len(data) > FRAME_BYTES:
                self._queue[0] = (label, data[FRAME_BYTES:])
            else:
                self._queue.popleft()
            n = len(chunk)
            self._queued -= n
            out.append(protocol.media_message(sid, chunk.tobytes()))
            self._account(label, n, now)
            if self._sent - self._marked >= self._mark_every:
                out.append(self._mark())
        if (
            not self._queue
            and self._sent > self._marked
            and now - self._last_send >= self.config.drain_mark_ms / 1000 - _EPS
        ):
            out.append(self._mark())
        return out

    def next_deadline(self, now: float) -> float:
        """When :meth:`pump` next has something to do (``math.inf`` if only input can wake it)."""
        if self._queue:
            return max(now, self._play_end - self._lead_s + 2 * _EPS)
        if self._sent > self._marked:
            return self._last_send + self.config.drain_mark_ms / 1000
        return math.inf

    def on_mark(self, name: str, now: float) -> PlaybackDone | None:
        """Twilio echoed a mark; returns :class:`PlaybackDone` when a reply has fully played."""
        generation, _, position = name.partition(".")
        if generation != str(self._generation) or not (position.isascii() and position.isdigit()):
            return None  # cleared audio, or not ours
        pos = int(position)
        if pos > self._sent:
            return None  # not a position we sent
        self._marks_echoed += 1
        if pos <= self._acked:
            return None
        self._acked = pos
        self._play_end = now + (self._sent - pos) / 8000
        if self._queued or pos < self._sent or not self._segments:
            return None
        label = self._segments[-1].label
        heard = sum(s.end - s.start for s in self._segments if s.label == label)
        self._heard_total += sum(s.end - s.start for s in self._segments)
        self._segments.clear()
        return PlaybackDone(label=label, heard_ms=heard // BYTES_PER_MS)

    def barge_in(self, now: float) -> tuple[str, Interrupted] | None:
        """The caller spoke: if bot audio is pending, return the ``clear`` and what was cut."""
        if not self.is_playing(now):
            return None
        played = self.played_position(now)
        current = next((s for s in self._segments if s.end > played), None)
        if current is not None:
            label = current.label
        elif self._queue:
            label = self._queue[0][0]
        else:
            label = self._segments[-1].label if self._segments else ""
        heard = sum(
            min(s.end, played) - s.start
            for s in self._segments
            if s.label == label and s.start < played
        )
        dropped = sum(
            s.end - max(s.start, played)
            for s in self._segments
            if s.label == label and s.end > played
        ) + sum(len(d) for lbl, d in self._queue if lbl == label)
        self._heard_total += sum(
            min(s.end, played) - s.start for s in self._segments if s.start < played
        )
        self._queue.clear()
        self._queued = 0
        self._cut_label = label or None
        self._segments.clear()
        self._generation += 1
        self._sent = self._marked = self._acked = 0
        self._play_end = now
        self._clears += 1
        return (
            protocol.clear_message(self.stream_sid),
            Interrupted(
                label=label, heard_ms=heard // BYTES_PER_MS, dropped_ms=dropped // BYTES_PER_MS
            ),
        )

    # -- internals ----------------------------------------------------------------------------

    def _account(self, label: str, n: int, now: float) -> None:
        start = self._sent
        self._sent += n
        self._sent_total += n
        self._play_end = max(now, self._play_end) + n / 8000
        self._last_send = now
        last = self._segments[-1] if self._segments else None
        if last is not None and last.label == label and last.end == start:
            last.end = self._sent
        else:
            self._segments.append(_Segment(label, start, self._sent))

    def _mark(self) -> str:
        self._marked = self._sent
        self._marks_sent += 1
        return protocol.mark_message(self.stream_sid, f"{self._generation}.{self._sent}")


class PlayoutWriter:
    """One call's outbound messages in order, and playout's fast lane for real-time audio.

    :meth:`write` sends what :class:`PlayoutCore` produced, in the order it was produced,
    whichever task produced it: a writer that finds another one blocked on the socket appends
    its messages to that writer's batch and waits for it, so nothing overtakes. Handed a
    socket whose ``send_many`` returns without a checkpoint while the kernel takes the bytes,
    a write costs no task switch.

    :meth:`play_now` is the fast lane: unpaced audio (``paced=False``: echo, speech-to-speech)
    that finds nothing ahead of it — playout's inbox and queue empty — is enqueued, pumped and
    written by the calling task itself, saving the hop into the playout task; :meth:`mark_now`
    does the same for Twilio's mark echoes. The playout task keeps its timers (the end-of-reply
    mark, hang-up after drain): the fast lane moves its wake-up earlier when it must.

    Timings for the metrics: the reader sets :attr:`sampled_at` (a sampled inbound frame) and
    :attr:`turn_ended_at` (the caller's speech ended); the next write that carries audio
    observes the round trip, the encode and socket steps, and the turn latency.
    """

    def __init__(
        self,
        core: PlayoutCore,
        inbox: FrameChannel[Frame],
        send_many: Callable[[list[str]], Awaitable[None]],
    ) -> None:
        self.core = core
        self._inbox = inbox
        self._send_many = send_many
        self._batch: list[str] = []
        self._busy = False
        self._done = trio.lowlevel.ParkingLot()
        self._wait: trio.CancelScope | None = None  # the playout task's current wait
        self._in_flight = 0  # bytes of audio reserved by the stage, not yet taken by playout
        self._room = trio.lowlevel.ParkingLot()  # stages waiting for playout to have room
        self.sampled_at = 0.0
        """``perf_counter()`` when a sampled inbound frame was read; 0 when none is pending."""
        self.turn_ended_at = 0.0
        """``perf_counter()`` when the caller's speech ended; 0 when no turn awaits a reply."""
        self.reply_s = 0.0
        """Encode + socket time of the last sampled reply (so the stage step can leave it out)."""

    async def write(self, messages: list[str]) -> None:
        """Send ``messages`` after everything written before them."""
        if not messages:
            return
        if self._busy:
            self._batch.extend(messages)
            await self._done.park()
            return
        self._busy = True
        try:
            await self._send_many(messages)
            while self._batch:
                batch, self._batch = self._batch, []
                await self._send_many(batch)
        finally:
            self._busy = False
            if self._done:
                self._done.unpark_all()

    async def reserve(self, size: int) -> None:
        """Wait until playout has room, then count ``size`` bytes of audio as on their way
        (the stage's back-pressure: see :attr:`PlayoutConfig.max_queued_ms`)."""
        while not self.core.has_room(self._in_flight):
            await self._room.park()
        self._in_flight += size

    def taken(self, size: int) -> None:
        """Playout took ``size`` bytes of audio from its inbox."""
        self._in_flight = max(0, self._in_flight - size)

    def _wake_producers(self) -> None:
        if self._room and self.core.has_room(self._in_flight):
            self._room.unpark_all()

    async def pump(self, now: float) -> None:
        """Write what :meth:`PlayoutCore.pump` has to send now (timed when a timing is due)."""
        core = self.core
        if not (self.sampled_at or self.turn_ended_at):
            await self.write(core.pump(now))
            self._wake_producers()
            return
        sent = core._sent_total
        t0 = perf_counter()
        messages = core.pump(now)
        t1 = perf_counter()
        await self.write(messages)
        t2 = perf_counter()
        self._wake_producers()
        if core._sent_total == sent:
            return
        if self.sampled_at:
            if t2 - self.sampled_at < ROUND_TRIP_HORIZON_S:
                _ENCODE.observe(t1 - t0)
                _SOCKET.observe(t2 - t1)
                FRAME_ROUND_TRIP.observe(t2 - self.sampled_at)
                self.reply_s = t2 - t0
            self.sampled_at = 0.0
        if self.turn_ended_at:
            TURN_LATENCY.observe(t2 - self.turn_ended_at)
            self.turn_ended_at = 0.0

    def _fast(self) -> bool:
        core = self.core
        return not core.config.paced and not core._queued and not self._inbox.buffered

    def _rearm(self, now: float) -> None:
        wait = self._wait
        if wait is not None:
            deadline = self.core.next_deadline(now)
            if deadline < wait.deadline:
                wait.deadline = deadline

    async def play_now(self, audio: PlayAudio) -> bool:
        """Play unpaced ``audio`` from the calling task if nothing is ahead of it; ``False``
        (and nothing done) if it must go through playout's inbox."""
        if not self._fast():
            return False
        now = trio.current_time()
        self.core.enqueue(audio)
        await self.pump(now)
        self._rearm(now)
        return True

    def mark_now(self, name: str) -> PlaybackDone | Literal[False] | None:
        """Take Twilio's echo of mark ``name`` in the calling task if nothing is ahead of it;
        ``False`` if it must go through playout's inbox, else what :meth:`PlayoutCore.on_mark`
        returned (deliver a :class:`PlaybackDone` to the stage)."""
        if not self._fast():
            return False
        now = trio.current_time()
        done = self.core.on_mark(name, now)
        wait = self._wait
        if wait is not None and self.core.idle_at() < wait.deadline:
            wait.deadline = now  # a hang-up waiting for the drain may go now
        return done


async def run_playout(
    core: PlayoutCore,
    inbox: FrameChannel[Frame],
    send: Callable[[str], Awaitable[None]],
    to_stage: FrameChannel[Frame],
    on_hang_up: Callable[[HangUp], None],
    writer: PlayoutWriter | None = None,
) -> None:
    """Run playout for one call until cancelled: the trio shell around :class:`PlayoutCore`.

    ``inbox`` carries :class:`PlayAudio`, :class:`SpeechStarted`, :class:`Interrupt`,
    :class:`MarkEcho` and :class:`HangUp`; :class:`Interrupted` and :class:`PlaybackDone` go to
    ``to_stage``. :class:`SpeechStarted` cuts the audio only with ``barge_in`` configured;
    :class:`Interrupt` (the stage's own barge-in) always does.
    ``send`` writes one message to Twilio's socket; with a ``writer`` (over the same socket),
    messages go through it instead, in order with its fast lane.
    """
    if writer is None:

        async def send_many(messages: list[str]) -> None:
            for message in messages:
                await send(message)

        writer = PlayoutWriter(core, inbox, send_many)
    write = writer.write
    hang_up: HangUp | None = None
    while True:
        now = trio.current_time()
        if hang_up is not None and not core.is_playing(now):
            on_hang_up(hang_up)
            return
        deadline = core.next_deadline(now)
        if hang_up is not None:
            deadline = min(deadline, core.idle_at())
        frame: Frame | None = None
        with trio.CancelScope(deadline=deadline) as wait:
            writer._wait = wait
            try:
                frame = await inbox.receive()
            finally:
                writer._wait = None
        now = trio.current_time()
        match frame:
            case PlayAudio():
                writer.taken(len(frame.ulaw))
                core.enqueue(frame)
            case MarkEcho(name=name):
                done = core.on_mark(name, now)
                if done is not None:
                    await to_stage.send(done)
            case SpeechStarted() | Interrupt():
                if type(frame) is Interrupt or core.config.barge_in:
                    cut = core.barge_in(now)
                    if cut is not None:
                        await write([cut[0]])
                        await to_stage.send(cut[1])
            case HangUp():
                if not frame.drain:
                    on_hang_up(frame)
                    return
                hang_up = frame
        await writer.pump(now)
