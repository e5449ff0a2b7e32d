"""Playout: pace the bot's audio to Twilio, track what the caller heard, and handle barge-in.

:class:`PlayoutCore` is sans-IO: it takes queued audio, Twilio's mark echoes and the time, and
returns the messages to send. It keeps only a small lead of audio queued at Twilio (``lead_ms``),
so a ``clear`` on barge-in takes effect at once. Its playback clock estimates where Twilio's
playback is; every ``mark_interval_ms`` of audio (and when a reply's audio runs out) it sends a
mark, and Twilio's echo of that mark re-anchors the clock. From the clock it knows how much of
each reply the caller actually heard.

Marks are named ``"<generation>.<byte position>"``; a ``clear`` starts a new generation, so the
marks Twilio echoes for cleared audio (§1.3: "played **or** dropped") are recognised and ignored.

No trio here: the playout task and its fast lane, the trio shell around this core, are in
:mod:`engine.media.outbound`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from engine.media import protocol
from engine.media.frames import Interrupted, PlayAudio, PlaybackDone

__all__ = ["PlayoutConfig", "PlayoutCore", "PlayoutStatistics"]

BYTES_PER_MS = 8
FRAME_BYTES = 160
MARK_GRACE_S = 1.0
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

    @property
    def queued_bytes(self) -> int:
        """μ-law bytes queued here, not yet sent."""
        return self._queued

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

    def play_now(self, audio: PlayAudio, now: float) -> list[str]:
        """Unpaced audio of at most one frame with nothing queued ahead of it: the messages to
        send for it now — exactly what :meth:`enqueue` then :meth:`pump` return, with less work
        (the per-frame path of echo and speech-to-speech)."""
        ulaw = audio.ulaw
        if self.config.paced or self._queue or len(ulaw) > FRAME_BYTES or not ulaw:
            self.enqueue(audio)
            return self.pump(now)
        if self._cut_label is not None:
            if audio.label == self._cut_label:
                return []
            self._cut_label = None
        out = [protocol.media_message(self.stream_sid, ulaw)]
        self._account(audio.label, len(ulaw), now)
        if self._sent - self._marked >= self._mark_every:
            out.append(self._mark())
        return out

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
