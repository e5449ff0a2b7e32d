"""When has the caller finished? The sans-IO end-of-turn policy (no trio, no model inside).

:class:`EndOfTurnPolicy` takes the caller's 8 kHz audio frame by frame, in media time, and says
when a turn starts and when it ends. It segments speech with
:class:`~engine.media.vad.TurnDetector` (webrtcvad with the engine's noise gate) at a short
hangover (120 ms: every pause that long is a *candidate* end) and decides with a schedule:

- at each rung of :attr:`PolicyConfig.schedule` (silence since the last voiced frame: by
  default 300 / 500 / 800 ms, thresholds 0.9 / 0.7 / 0.4) it emits a :class:`Question`: the
  caller's audio since the turn began (the last 8 s, across pauses, and across a cut-in: a turn
  that starts within ``context_ms`` of the previous end keeps that turn's audio as context), for
  an analyzer to score;
- :meth:`EndOfTurnPolicy.answer` takes the analyzer's probability that the turn is complete; the
  turn ends if it reaches the threshold of the *current* silence (strict early, looser later),
  after the cues: the words so far (:func:`text_incomplete`: a transcript ending on "and",
  "of", "the" or a comma caps the probability) and, optionally, the final pitch movement
  (:mod:`engine.media.turn.prosody`);
- whatever the analyzer says, ``max_silence_ms`` of silence ends the turn; once
  ``unsure_after`` turns in a row ran out that way (the analyzer never sure of this voice: a
  synthetic caller, a line unlike its training), the rest of the call's turns also end by the
  VAD rule (reason ``"unsure"``) unless the analyzer ends them sooner; a turn whose question
  failed (the analyzer raised or stalled: ``answer(id, None)``) falls back to the plain VAD rule
  for the rest of that turn: ``fallback_hangover_ms`` of silence, or, with ``vad_rule`` set, the
  engine's own detector at that tuning run alongside (the turn ends once that detector's turn
  has ended — exactly when a call on the plain VAD would have ended it).

``PolicyConfig(schedule=())`` is the plain VAD rule (``fallback_hangover_ms`` of silence, no
questions), so VAD-only endpointing stays one configuration away.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from engine.media.frames import PCM, SpeechEnded, SpeechStarted, Utterance
from engine.media.turn.prosody import final_pitch_slope
from engine.media.vad import TurnConfig, TurnDetector

__all__ = [
    "EndOfTurn",
    "EndOfTurnPolicy",
    "PolicyConfig",
    "PolicyEvent",
    "Question",
    "Rung",
    "text_incomplete",
]

FRAME_MS = 20
"""The frame length :meth:`EndOfTurnPolicy.feed` takes."""
_SAMPLES_PER_MS = 8
_FRAME_SAMPLES = FRAME_MS * _SAMPLES_PER_MS
_NO_EVENTS: tuple[PolicyEvent, ...] = ()

_DANGLING_WORDS = """
    and or but nor because although though whereas if unless until while
    a an the my your our their its
    of to at for with from into onto upon between during without among towards toward via per
    um uh er erm
"""
_DANGLING = frozenset(_DANGLING_WORDS.split())
"""Words after which an English sentence is not finished: conjunctions, articles, possessive
determiners, prepositions that seldom end a sentence, fillers. Kept short on purpose: words
that often do end one ("that's where the airport *is*", "come *in*", "I think *so*", "yes I
*can*") are left out, as a wrong "incomplete" costs a whole ``max_silence_ms``."""
_WORD = re.compile(r"[a-z']+")


def text_incomplete(text: str | None) -> bool:
    """Whether the words so far cannot end a sentence: they end on a comma or dangling word.

    ``None`` or an empty transcript says nothing (``False``).
    """
    if not text:
        return False
    stripped = text.rstrip()
    if stripped.endswith((",", ";", ":", "-", "—")):
        return True
    words = _WORD.findall(stripped.lower())
    return bool(words) and words[-1] in _DANGLING


@dataclass(frozen=True, slots=True)
class Rung:
    """One step of the schedule: from ``silence_ms`` of silence on, ``threshold`` ends a turn."""

    silence_ms: int
    threshold: float


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """How the policy segments speech, when it asks, and what the answers must reach."""

    vad: TurnConfig = field(
        default_factory=lambda: TurnConfig(
            hangover_ms=120, post_roll_ms=60, max_utterance_ms=600_000
        )
    )
    """Speech segmentation: its hangover is the shortest pause that is a candidate end."""
    schedule: tuple[Rung, ...] = (Rung(300, 0.9), Rung(500, 0.7), Rung(800, 0.4))
    """Ask at each rung's silence; the turn ends when an answer reaches the threshold of the
    rung the silence has reached by then. Empty: no questions, the plain VAD rule."""
    max_silence_ms: int = 1200
    """This much silence ends the turn whatever the analyzer said."""
    fallback_hangover_ms: int = 500
    """The VAD rule: used by a turn with no schedule or whose question failed."""
    vad_rule: TurnConfig | None = None
    """The VAD rule as the engine's detector (:class:`~engine.media.vad.TurnDetector`) at this
    tuning, fed alongside the segmenter (one more VAD per frame): a turn that falls back ends
    when the detector is no longer in a turn, instead of after ``fallback_hangover_ms`` of the
    segmenter's silence. The detector's hold on a turn through breaths and line noise is what
    a call on the plain VAD lives with, and the segmenter has none of it."""
    window_ms: int = 8000
    """Audio in a question: the last this-many ms of the turn (the model reads 8 s)."""
    pre_roll_ms: int = 200
    """Audio kept from before the first voiced frame of a turn."""
    context_ms: int = 2000
    """A turn starting within this of the previous end keeps that turn's audio as context."""
    text_cap: float = 0.0
    """Probability cap when the words so far cannot end a sentence (:func:`text_incomplete`);
    1.0 turns the text cue off."""
    rise_cap: float = 1.0
    """Probability cap when the voice rose at the end (a continuation rise, more than
    ``rise_semitones``); 1.0 (the default) turns the prosody cue off."""
    rise_semitones: float = 2.0
    """Final pitch rise (semitones over the last voiced 200 ms) that counts as a rise."""
    max_turn_ms: int = 60_000
    """A turn longer than this ends (memory bound)."""
    unsure_after: int = 2
    """After this many turns in a row ran to ``max_silence_ms`` (the analyzer never sure), the
    rest of the call's turns also end by the VAD rule — the analyzer is still asked and may
    end them sooner. A voice the model is never sure of is then answered as on the plain VAD
    rather than after the limit every time. 0: never."""

    def __post_init__(self) -> None:
        silences = [r.silence_ms for r in self.schedule]
        if silences != sorted(silences) or any(s < FRAME_MS for s in silences):
            raise ValueError("schedule rungs must have increasing silences of at least 20 ms")
        if not all(0.0 <= r.threshold <= 1.0 for r in self.schedule):
            raise ValueError("thresholds must lie in [0, 1]")
        if self.schedule and self.max_silence_ms < self.schedule[-1].silence_ms:
            raise ValueError("max_silence_ms must not come before the last rung")
        if self.unsure_after < 0:
            raise ValueError("unsure_after must not be negative")


@dataclass(frozen=True, slots=True)
class Question:
    """Ask the analyzer: is the turn in ``audio`` (8 kHz, ending now) complete?"""

    id: int
    audio: PCM
    silence_ms: int
    """Silence at the end of ``audio`` (since the last voiced frame)."""
    asked_at: int
    """Media time (ms) of the end of ``audio``."""
    transcript: str | None = None
    """The words so far, when the pipeline transcribes."""


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """The caller's turn is over: ``utterance`` is all of it (pre-roll included)."""

    utterance: Utterance
    speech_ended: SpeechEnded
    decided_at: int
    """Media time (ms) of the decision."""
    reason: str
    """``"model"``, ``"max_silence"``, ``"vad"`` (no schedule), ``"fallback"`` (the analyzer
    failed this turn), ``"unsure"`` (the VAD rule, after ``unsure_after`` turns in a row ran
    to the limit) or ``"max_turn"``."""
    probability: float | None = None
    """The answer that ended the turn (after the cues), when the analyzer ended it."""
    resumed: bool = False
    """The turn began within ``context_ms`` of the previous end: the caller was probably cut
    off and went on, so this utterance continues the previous one."""


PolicyEvent = SpeechStarted | Question | EndOfTurn
"""What :meth:`EndOfTurnPolicy.feed` and :meth:`EndOfTurnPolicy.answer` return."""


class EndOfTurnPolicy:
    """The end-of-turn state machine of one call (see the module docstring)."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config = config or PolicyConfig()
        self._vad = TurnDetector(config.vad)
        self._rule = TurnDetector(config.vad_rule) if config.vad_rule is not None else None
        keep = (config.window_ms + config.context_ms + config.pre_roll_ms) // FRAME_MS
        self._ring: deque[tuple[int, PCM]] = deque(maxlen=keep)
        self._turn: list[PCM] = []
        self._turn_start = 0
        self._context_start = 0
        self._in_turn = False
        self._in_pause = False
        self._last_voiced_end = 0
        self._next_rung = 0
        self._pending: int | None = None
        self._fallback = False
        self._last_end_at: int | None = None
        self._now = 0
        self._ids = 0
        self._transcript: str | None = None
        self._resumed = False
        self._undecided = 0  # turns in a row that ran to max_silence_ms
        self.questions = 0
        """Questions asked so far."""
        self.fallback_turns = 0
        """Turns that fell back to the VAD rule because a question failed."""

    @property
    def in_turn(self) -> bool:
        """Whether the caller's turn is open (speaking or in a pause within it)."""
        return self._in_turn

    @property
    def now(self) -> int:
        """Media time (ms) of the end of the last frame fed."""
        return self._now

    def set_transcript(self, text: str | None) -> None:
        """The words of the open turn so far (for pipelines that transcribe). Ignored while no
        turn is open: a late partial of the turn that just ended is not the next turn's."""
        if self._in_turn:
            self._transcript = text

    def feed(self, pcm: PCM, timestamp: int) -> tuple[PolicyEvent, ...]:
        """Feed 20 ms of caller audio starting at media time ``timestamp`` (ms)."""
        if len(pcm) != _FRAME_SAMPLES:
            raise ValueError("feed 20 ms frames (160 samples)")
        self._now = timestamp + FRAME_MS
        self._ring.append((timestamp, pcm))
        if self._in_turn:
            self._turn.append(pcm)
        if self._rule is not None:
            self._rule.process(pcm, timestamp)  # its state is read when a turn falls back
        detected = self._vad.process(pcm, timestamp)
        if not detected:  # most frames: nothing to segment, at most a rung to reach
            return self._tick() if self._in_turn else _NO_EVENTS
        out: list[PolicyEvent] = []
        for event in detected:
            if isinstance(event, SpeechStarted):
                out.extend(self._speech(event))
            elif isinstance(event, SpeechEnded):
                self._in_pause = True
                self._last_voiced_end = event.timestamp
                self._next_rung = 0
                self._pending = None
        if self._in_turn:
            out.extend(self._tick())
        return tuple(out)

    def answer(self, question_id: int, probability: float | None) -> tuple[PolicyEvent, ...]:
        """The analyzer's answer to a :class:`Question`: P(complete), or ``None`` if it failed.

        Stale answers (the caller spoke again, or a later question is pending) are ignored.
        """
        if question_id != self._pending or not self._in_turn or not self._in_pause:
            return ()
        self._pending = None
        if probability is None:
            if not self._fallback:
                self._fallback = True
                self.fallback_turns += 1
            return self._tick()
        p = self._cued(probability)
        silence = self._now - self._last_voiced_end
        if p >= self._threshold(silence):
            return (self._end("model", p),)
        return ()

    # -- internals --------------------------------------------------------------------------

    def _speech(self, event: SpeechStarted) -> tuple[PolicyEvent, ...]:
        self._in_pause = False
        self._pending = None
        self._next_rung = 0
        if self._in_turn:
            return ()  # the caller resumed within the turn
        kept = [
            (ts, pcm) for ts, pcm in self._ring if ts >= event.timestamp - self.config.pre_roll_ms
        ]
        start = kept[0][0] if kept else event.timestamp
        self._turn_start = start
        resumed = (
            self._last_end_at is not None
            and event.timestamp - self._last_end_at <= self.config.context_ms
        )
        self._context_start = self._context_start if resumed else start
        self._resumed = resumed
        self._turn = [pcm for _, pcm in kept]
        self._in_turn = True
        self._fallback = False
        return (event,)

    def _tick(self) -> tuple[PolicyEvent, ...]:
        config = self.config
        if self._now - self._turn_start >= config.max_turn_ms:
            return (self._end("max_turn", None),)
        if not self._in_pause:
            return ()
        silence = self._now - self._last_voiced_end
        if not config.schedule or self._fallback:
            if self._vad_rule_ends(silence):
                return (self._end("fallback" if self._fallback else "vad", None),)
            return ()
        if silence >= config.max_silence_ms:
            return (self._end("max_silence", None),)
        if 0 < config.unsure_after <= self._undecided and self._vad_rule_ends(silence):
            return (self._end("unsure", None),)
        rungs = config.schedule
        if self._next_rung < len(rungs) and silence >= rungs[self._next_rung].silence_ms:
            while self._next_rung < len(rungs) and silence >= rungs[self._next_rung].silence_ms:
                self._next_rung += 1
            if self._pending is None:
                return (self._ask(silence),)
        return ()

    def _vad_rule_ends(self, silence: int) -> bool:
        """Whether the VAD rule would end the turn now."""
        if self._rule is None:
            return silence >= self.config.fallback_hangover_ms
        return not self._rule.speaking

    def _ask(self, silence: int) -> Question:
        self._ids += 1
        self._pending = self._ids
        self.questions += 1
        start = max(self._context_start, self._now - self.config.window_ms)
        frames = [pcm for ts, pcm in self._ring if ts >= start]
        audio = np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)
        return Question(self._ids, audio, silence, self._now, self._transcript)

    def _threshold(self, silence: int) -> float:
        threshold = 1.0
        for rung in self.config.schedule:
            if silence >= rung.silence_ms:
                threshold = rung.threshold
        return threshold

    def _cued(self, probability: float) -> float:
        config = self.config
        p = probability
        if config.text_cap < 1.0 and text_incomplete(self._transcript):
            p = min(p, config.text_cap)
        if config.rise_cap < 1.0:
            since = self._last_voiced_end - 1000
            recent = [pcm for ts, pcm in self._ring if since <= ts < self._last_voiced_end]
            if recent:
                slope = final_pitch_slope(np.concatenate(recent))
                if slope is not None and slope > config.rise_semitones:
                    p = min(p, config.rise_cap)
        return p

    def _end(self, reason: str, probability: float | None) -> EndOfTurn:
        config = self.config
        end = min(self._now, self._last_voiced_end + config.vad.post_roll_ms)
        if not self._in_pause:
            end = self._now
        keep = max(0, len(self._turn) - (self._now - end) // FRAME_MS)
        pcm = np.concatenate(self._turn[:keep]) if keep else np.zeros(0, dtype=np.int16)
        last_voiced = self._last_voiced_end if self._in_pause else self._now
        event = EndOfTurn(
            utterance=Utterance(pcm=pcm, start=self._turn_start, end=end),
            speech_ended=SpeechEnded(timestamp=last_voiced),
            decided_at=self._now,
            reason=reason,
            probability=probability,
            resumed=self._resumed,
        )
        if reason == "max_silence":
            self._undecided += 1
        elif reason == "model" and self._undecided < config.unsure_after:
            self._undecided = 0  # once unsure, the VAD rule stays the call's backstop
        self._in_turn = False
        self._pending = None
        self._turn = []
        self._transcript = None
        self._last_end_at = self._now
        return event
