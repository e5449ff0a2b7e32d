"""How the speech-to-text agents (``local``, ``llm``) hear the caller.

Audio goes to a :class:`~pipelines.stt.SpeechRecognizer` (by default a
:class:`~pipelines.recognition.RemoteRecognizer`, decoding in a worker process) only between
``SpeechStarted`` (with a pre-roll from before it) and the ``Utterance`` that ends the turn, in
batches, and the final hypothesis is the transcript. The frame loop calls :class:`Listener`'s
``on_*`` methods, which queue :data:`Work`; the agent's listening task takes everything queued
with :meth:`Listener.next_work` and runs :meth:`Listener.recognize` on it in a worker thread.
Audio queued while recognition is busy is merged into one :class:`Feed`, so the queue holds at
most a few items per turn however far recognition falls behind.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import trio

from engine.media.frames import PCM, Audio, SpeechStarted
from pipelines.stt import SpeechRecognizer

__all__ = ["EndOfTurn", "Feed", "Listener", "Work"]

log = logging.getLogger(__name__)

FRAME_MS = 20
DETECTION_DELAY_MS = 200
"""The turn detector decides up to this long after the onset it reports."""


@dataclass(frozen=True, slots=True)
class Feed:
    """Caller audio for the recognizer; ``begin`` starts a turn."""

    pcm: PCM
    begin: bool = False


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """The turn ended (its ``Utterance`` arrived at trio time ``at``)."""

    at: float


Work = Feed | EndOfTurn
"""What the frame loop queues for the listening task."""


class Listener:
    """The caller's side of one call: a pre-roll ring of audio, the batch being gathered while
    the caller speaks, and the call's recognizer (made on first use, in a worker thread)."""

    def __init__(
        self, make_recognizer: Callable[[], SpeechRecognizer], *, batch_ms: int, pre_roll_ms: int
    ) -> None:
        """Listen in batches of ``batch_ms``, starting ``pre_roll_ms`` before ``SpeechStarted``."""
        self._make_recognizer = make_recognizer
        self._batch_frames = max(1, batch_ms // FRAME_MS)
        self._pre_roll_ms = pre_roll_ms
        self._ring: deque[Audio] = deque(maxlen=(pre_roll_ms + DETECTION_DELAY_MS) // FRAME_MS + 1)
        self._batch: list[PCM] = []
        self._speaking = False
        self._begin_next = False
        self.recognizer: SpeechRecognizer | None = None
        """The call's recognizer, once made; :meth:`aclose` closes it."""
        self.partial: str | None = None
        """The latest partial transcript of the turn in progress (``None`` between turns)."""
        self._work: deque[Work] = deque()
        self._queued = trio.Event()

    def _put(self, item: Work) -> None:
        last = self._work[-1] if self._work else None
        if isinstance(item, Feed) and not item.begin and isinstance(last, Feed):
            self._work[-1] = Feed(np.concatenate((last.pcm, item.pcm)), last.begin)
        else:
            self._work.append(item)
        self._queued.set()

    async def next_work(self) -> list[Work]:
        """Wait for queued work and take all of it, in order."""
        while not self._work:
            self._queued = trio.Event()
            await self._queued.wait()
        items = list(self._work)
        self._work.clear()
        return items

    async def aclose(self) -> None:
        """Close the call's recognizer (in a worker thread, even when cancelled)."""
        recognizer, self.recognizer = self.recognizer, None
        if recognizer is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(recognizer.close)

    def on_audio(self, frame: Audio) -> None:
        """Keep ``frame`` for the pre-roll, or add it to the batch while the caller speaks."""
        if not self._speaking:
            self._ring.append(frame)
            return
        self._batch.append(frame.pcm)
        if len(self._batch) >= self._batch_frames:
            self._send_batch()

    def on_speech_started(self, event: SpeechStarted) -> None:
        """Start a turn with the pre-roll audio from just before ``event``."""
        onset = event.timestamp - self._pre_roll_ms
        self._batch = [frame.pcm for frame in self._ring if frame.timestamp >= onset]
        self._ring.clear()
        self._speaking = True
        self._begin_next = True

    def on_end_of_turn(self) -> None:
        """End the turn (an ``Utterance``): queue the rest of its audio and the end of turn."""
        if not self._speaking:
            return
        self._send_batch()
        self._speaking = False
        self._put(EndOfTurn(trio.current_time()))

    def _send_batch(self) -> None:
        if not self._batch and not self._begin_next:
            return
        pcm = np.concatenate(self._batch) if self._batch else np.empty(0, dtype=np.int16)
        self._put(Feed(pcm, begin=self._begin_next))
        self._batch = []
        self._begin_next = False

    def recognize(self, items: list[Work], call_sid: str = "") -> list[tuple[str, float]]:
        """Run queued recognition work in order (in a worker thread); return the final
        transcripts with the time their turn ended. The turn in progress's latest partial
        transcript is kept in :attr:`partial` (and logged at debug level)."""
        if self.recognizer is None:
            self.recognizer = self._make_recognizer()
        recognizer = self.recognizer
        finals: list[tuple[str, float]] = []
        pending: list[PCM] = []

        def flush() -> None:
            if pending:
                partial = recognizer.feed(np.concatenate(pending))
                pending.clear()
                if partial is not None:
                    self.partial = partial
                    log.debug("call %s: partial %r", call_sid, partial)

        for item in items:
            if isinstance(item, Feed):
                if item.begin:
                    flush()
                    recognizer.begin()
                    self.partial = None
                pending.append(item.pcm)
            else:
                flush()
                finals.append((recognizer.finish(), item.at))
                self.partial = None
        flush()
        return finals
