"""How the ``llm`` agent hears the caller, as :mod:`pipelines.local` does: audio goes to a
:class:`~pipelines.stt.Recognizer` only between ``SpeechStarted`` (with a pre-roll before it)
and the ``Utterance`` ending the turn, in batches, and the final hypothesis is the transcript.

The frame loop calls :class:`_Listener`'s ``on_*`` methods, which queue work for the agent's
listening task; that task runs :meth:`_Listener.recognize` on the work in a worker thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import trio

from engine.media.frames import PCM, Audio, SpeechStarted
from pipelines.llm.reply import FRAME_MS
from pipelines.stt import Recognizer


@dataclass(frozen=True, slots=True)
class _Feed:
    """Caller audio for the recognizer; ``begin`` starts a turn."""

    pcm: PCM
    begin: bool = False


@dataclass(frozen=True, slots=True)
class _EndOfTurn:
    """The turn ended (its ``Utterance`` arrived at trio time ``at``)."""

    at: float


_Work = _Feed | _EndOfTurn


class _Listener:
    """The caller's side of one call: a pre-roll ring of audio, the batch being gathered while
    the caller speaks, and the call's recognizer (made on first use, in a worker thread)."""

    def __init__(
        self, make_recognizer: Callable[[], Recognizer], *, batch_ms: int, pre_roll_ms: int
    ) -> None:
        """Listen in batches of ``batch_ms``, starting ``pre_roll_ms`` before ``SpeechStarted``."""
        self._make_recognizer = make_recognizer
        self._batch_frames = max(1, batch_ms // FRAME_MS)
        self._pre_roll_ms = pre_roll_ms
        self._ring: deque[Audio] = deque(maxlen=max(1, pre_roll_ms // FRAME_MS))
        self._batch: list[PCM] = []
        self._speaking = False
        self._begin_next = False
        self.recognizer: Recognizer | None = None
        """The call's recognizer, once made; whoever ends the call closes it."""

    def on_audio(self, frame: Audio, to_listener: trio.MemorySendChannel[_Work]) -> None:
        """Keep ``frame`` for the pre-roll, or add it to the batch while the caller speaks."""
        if not self._speaking:
            self._ring.append(frame)
            return
        self._batch.append(frame.pcm)
        if len(self._batch) >= self._batch_frames:
            self._send_batch(to_listener)

    def on_speech_started(self, event: SpeechStarted) -> None:
        """Start a turn with the pre-roll audio from just before ``event``."""
        onset = event.timestamp - self._pre_roll_ms
        self._batch = [frame.pcm for frame in self._ring if frame.timestamp >= onset]
        self._ring.clear()
        self._speaking = True
        self._begin_next = True

    def on_end_of_turn(self, to_listener: trio.MemorySendChannel[_Work]) -> None:
        """End the turn (an ``Utterance``): send the rest of its audio and the end of turn."""
        if not self._speaking:
            return
        self._send_batch(to_listener)
        self._speaking = False
        to_listener.send_nowait(_EndOfTurn(trio.current_time()))

    def _send_batch(self, to_listener: trio.MemorySendChannel[_Work]) -> None:
        if not self._batch and not self._begin_next:
            return
        pcm = np.concatenate(self._batch) if self._batch else np.empty(0, dtype=np.int16)
        to_listener.send_nowait(_Feed(pcm, begin=self._begin_next))
        self._batch = []
        self._begin_next = False

    def recognize(self, items: list[_Work]) -> list[tuple[str, float]]:
        """Run queued recognition work in order (in a worker thread); return final transcripts."""
        if self.recognizer is None:
            self.recognizer = self._make_recognizer()
        recognizer = self.recognizer
        finals: list[tuple[str, float]] = []
        pending: list[PCM] = []
        for item in items:
            if isinstance(item, _Feed):
                if item.begin:
                    if pending:
                        recognizer.feed(np.concatenate(pending))
                        pending.clear()
                    recognizer.begin()
                pending.append(item.pcm)
            else:
                if pending:
                    recognizer.feed(np.concatenate(pending))
                    pending.clear()
                finals.append((recognizer.finish(), item.at))
        if pending:
            recognizer.feed(np.concatenate(pending))
        return finals
