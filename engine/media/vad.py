"""Voice-activity detection and end-of-turn, sans-IO.

:class:`TurnDetector` takes the caller's audio as 8 kHz int16 frames and returns events:
:class:`~engine.media.frames.SpeechStarted` once enough voiced audio is seen,
then :class:`~engine.media.frames.Utterance` and :class:`~engine.media.frames.SpeechEnded`
after a silence hangover. WebRTC's VAD classifies each 20 ms frame; hysteresis on top of it
keeps a cough or a click from starting a turn and a short pause from ending one.

Defaults (see :class:`TurnConfig`): speech starts when 40 ms of the last 100 ms are voiced; a turn
ends after 500 ms of silence; an utterance keeps 200 ms of audio from before the first voiced
frame (so the first syllable survives) and 60 ms after the last; an utterance longer than 30 s
is cut into turns so memory stays bounded. Within a turn, a frame WebRTC calls voiced but that
lies 20 dB below the turn's speech level counts as silence (``tail_db``), so the hangover runs
from the real end of speech rather than from the end of WebRTC's own smoothing.

WebRTC's VAD calls any loud sound speech: a fan, traffic or a crowd at speaking level is 100 %
"voiced" to it. A noise-floor tracker gates both decisions: a frame counts as speech only when it
is also ``snr_db`` above the floor, the quietest frame of the last ``floor_window_ms`` (minimum
statistics: speech dips between syllables, so the floor stays at the noise under it, while a
steady or slowly swelling noise lifts the floor with it). A sudden loud noise still starts a turn
— until it has lasted one window — and then the turn ends as after speech.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from engine.media.frames import PCM, SpeechEnded, SpeechStarted, Utterance

__all__ = ["TurnConfig", "TurnDetector", "TurnEvent"]

TurnEvent = SpeechStarted | Utterance | SpeechEnded
"""What :meth:`TurnDetector.process` returns."""

FRAME_MS = 20
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
_FLOOR_POWER = 100.0**2  # about −50 dBFS: below it nothing is speech
_MIN_NOISE_POWER = 10.0**2  # the noise floor never goes below −70 dBFS (digital silence)
_BLOCK_MS = 100  # the noise floor keeps one minimum per block of this many ms
_BLOCK_FRAMES = _BLOCK_MS // FRAME_MS
_NO_EVENTS: tuple[TurnEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class TurnConfig:
    """Tuning of the turn detector; every time is in milliseconds and a multiple of 20."""

    aggressiveness: int = 2
    """WebRTC VAD mode, 0 (lenient) … 3 (strict about what counts as speech)."""
    start_ms: int = 40
    """Voiced audio within the last ``start_window_ms`` needed to declare speech (40 ms: the
    ``clear`` of a barge-in goes out ~20 ms after the true onset in the frame timing of a call;
    the noise gate, not this count, keeps steady noise from starting turns)."""
    start_window_ms: int = 100
    hangover_ms: int = 500
    """Silence after the last voiced frame that ends the turn."""
    pre_roll_ms: int = 200
    """Audio kept from before the first voiced frame."""
    post_roll_ms: int = 60
    """Audio kept after the last voiced frame."""
    max_utterance_ms: int = 30_000
    tail_db: float = 20.0
    """Voiced frames this far below the turn's speech level count as silence: WebRTC's VAD keeps
    reporting speech for ~100–200 ms after it ends, which would otherwise add to every turn."""
    snr_db: float = 15.0
    """To start a turn, a voiced frame must be this far above the tracked noise floor."""
    hold_snr_db: float = 9.0
    """Within a turn, a voiced frame this far above the noise floor still counts as speech."""
    floor_window_ms: int = 1500
    """The noise floor is the quietest frame of this long (a multiple of 100 ms)."""

    def __post_init__(self) -> None:
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError("aggressiveness must be 0…3")
        for name in (
            "start_ms",
            "start_window_ms",
            "hangover_ms",
            "pre_roll_ms",
            "post_roll_ms",
            "max_utterance_ms",
        ):
            value = getattr(self, name)
            if value < 0 or value % FRAME_MS:
                raise ValueError(f"{name} must be a non-negative multiple of {FRAME_MS} ms")
        if not 0 < self.start_ms <= self.start_window_ms:
            raise ValueError("start_ms must be within (0, start_window_ms]")
        if self.hangover_ms < FRAME_MS or self.post_roll_ms > self.hangover_ms:
            raise ValueError("hangover_ms must be ≥ 20 and ≥ post_roll_ms")
        if not 0 <= self.hold_snr_db <= self.snr_db:
            raise ValueError("need 0 ≤ hold_snr_db ≤ snr_db")
        if self.floor_window_ms < _BLOCK_MS or self.floor_window_ms % _BLOCK_MS:
            raise ValueError(f"floor_window_ms must be a positive multiple of {_BLOCK_MS}")


class TurnDetector:
    """Turns a stream of 20 ms frames into speech-started / utterance / speech-ended events.

    Frames of other sizes are re-cut into 20 ms internally; ``timestamp`` is the media time (ms)
    of the first sample passed in.
    """

    def __init__(self, config: TurnConfig | None = None) -> None:
        self.config = config = config or TurnConfig()
        self._vad = webrtcvad.Vad(config.aggressiveness)
        self._window: deque[bool] = deque(maxlen=config.start_window_ms // FRAME_MS)
        self._voiced_in_window = 0
        self._start_frames = config.start_ms // FRAME_MS
        self._history: deque[tuple[int, PCM]] = deque(
            maxlen=(config.pre_roll_ms + config.start_window_ms) // FRAME_MS
        )
        self._speaking = False
        self._frames: list[PCM] = []
        self._start = 0
        self._last_voiced_end = 0
        self._silence_ms = 0
        self._pending = np.empty(0, dtype=np.int16)
        self._pending_ts = 0
        self._level = 0.0  # running power of the turn's speech
        self._tail_ratio = 10 ** (-config.tail_db / 10)
        # Noise floor, by minimum statistics: the minimum of each 100 ms block, kept for one
        # window; the floor is the smallest of them (and of the block so far).
        self._block_minima: deque[float] = deque(
            [_MIN_NOISE_POWER], maxlen=config.floor_window_ms // _BLOCK_MS
        )
        self._floor = _MIN_NOISE_POWER
        self._block_min = float("inf")
        self._block_frames = 0
        self._snr_ratio = 10 ** (config.snr_db / 10)
        self._hold_ratio = 10 ** (config.hold_snr_db / 10)

    @property
    def speaking(self) -> bool:
        """Whether the caller is inside a turn."""
        return self._speaking

    def process(self, pcm: PCM, timestamp: int) -> tuple[TurnEvent, ...]:
        """Feed caller audio; return the events it completes (usually none)."""
        if len(pcm) == FRAME_SAMPLES and not len(self._pending):
            return self._frame(pcm, timestamp)
        if not len(self._pending):
            self._pending_ts = timestamp
        self._pending = np.concatenate((self._pending, pcm))
        events: tuple[TurnEvent, ...] = _NO_EVENTS
        while len(self._pending) >= FRAME_SAMPLES:
            frame, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
            events += self._frame(frame, self._pending_ts)
            self._pending_ts += FRAME_MS
        return events

    def _frame(self, pcm: PCM, timestamp: int) -> tuple[TurnEvent, ...]:
        samples = pcm.astype(np.float32)
        power = float(np.dot(samples, samples)) / len(samples)
        if power < self._block_min:
            self._block_min = power
        self._block_frames += 1
        if self._block_frames == _BLOCK_FRAMES:
            self._block_minima.append(max(_MIN_NOISE_POWER, self._block_min))
            self._floor = min(self._block_minima)
            self._block_min = float("inf")
            self._block_frames = 0
        noise = self._floor if self._floor < self._block_min else self._block_min
        ratio = self._hold_ratio if self._speaking else self._snr_ratio
        loud = power >= _FLOOR_POWER and power >= noise * ratio
        voiced = loud and self._vad.is_speech(pcm, 8000)
        if not self._speaking:
            self._history.append((timestamp, pcm))
            window = self._window
            if len(window) == window.maxlen and window[0]:
                self._voiced_in_window -= 1
            window.append(voiced)
            self._voiced_in_window += voiced
            if self._voiced_in_window < self._start_frames:
                return _NO_EVENTS
            return (self._begin(timestamp),)
        self._frames.append(pcm)
        if voiced and self._loud(power):
            self._silence_ms = 0
            self._last_voiced_end = timestamp + FRAME_MS
        else:
            self._silence_ms += FRAME_MS
        if (
            self._silence_ms >= self.config.hangover_ms
            or timestamp + FRAME_MS - self._start >= self.config.max_utterance_ms
        ):
            return self._finish(timestamp + FRAME_MS)
        return _NO_EVENTS

    def _loud(self, power: float) -> bool:
        """Whether a voiced frame is real speech rather than WebRTC's tail after it."""
        if self._level == 0.0:
            self._level = power
        if power < self._level * self._tail_ratio:
            return False
        self._level = 0.9 * self._level + 0.1 * power
        return True

    def _begin(self, timestamp: int) -> SpeechStarted:
        recent = list(self._history)[-len(self._window) :]
        first_voiced = next(ts for (ts, _), v in zip(recent, self._window, strict=True) if v)
        kept = [
            (ts, pcm) for ts, pcm in self._history if ts >= first_voiced - self.config.pre_roll_ms
        ]
        self._start = kept[0][0]
        self._frames = [pcm for _, pcm in kept]
        self._speaking = True
        self._level = 0.0
        self._silence_ms = 0
        self._last_voiced_end = timestamp + FRAME_MS
        self._history.clear()
        self._window.clear()
        self._voiced_in_window = 0
        return SpeechStarted(timestamp=first_voiced, detected_at=timestamp)

    def _finish(self, now: int) -> tuple[TurnEvent, ...]:
        end = min(now, self._last_voiced_end + self.config.post_roll_ms)
        keep = max(0, len(self._frames) - (now - end) // FRAME_MS)
        pcm = np.concatenate(self._frames[:keep]) if keep else np.empty(0, dtype=np.int16)
        self._speaking = False
        self._frames = []
        self._silence_ms = 0
        return (
            Utterance(pcm=pcm, start=self._start, end=end),
            SpeechEnded(timestamp=self._last_voiced_end),
        )
