"""End of turn in live calls: the call session's turn step, and the process's one Smart Turn.

- :func:`turn_step` makes what a call's reader loop calls for each inbound frame, with the
  signature of :meth:`~engine.media.vad.TurnDetector.process`: the plain VAD detector itself,
  or :class:`AnalyzedTurns` — a :class:`~engine.media.turn.analyzer.TurnTaker` that gives the
  same events (:class:`~engine.media.frames.SpeechStarted`; at the end of a turn an
  :class:`~engine.media.frames.Utterance` then a :class:`~engine.media.frames.SpeechEnded`),
  so stages and the call probe see no difference but the timing. Its per-frame work is the
  policy's (the VAD and a few comparisons); questions go to the analyzer from tasks of the
  call's nursery, and answers are applied on the next frame.
- :class:`SharedSmartTurn` is the process's Smart Turn v3: one model and one bounded
  :class:`~engine.media.turn.service.ScoringService` for every call that uses it, loaded
  when a call first asks for it.

Counted in :mod:`engine.metrics`: how each analysed turn ended
(``voice_engine_turn_decisions_total{outcome}``: ``model``, ``max_silence``, ``fallback``,
``unsure``, ``max_turn``), what became of each question
(``voice_engine_turn_questions_total{outcome}``: ``answered``, ``saturated``, ``failed``,
``timed_out``) and how long answers took.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from time import perf_counter

import numpy as np
import trio

from engine.media.frames import PCM, SpeechStarted
from engine.media.turn.analyzer import TurnAnalyzer, TurnTaker
from engine.media.turn.policy import FRAME_MS, EndOfTurn, PolicyConfig, PolicyEvent, Question
from engine.media.turn.service import (
    ScoringModel,
    ScoringService,
    ServiceSaturated,
    ServiceStatistics,
    default_threads,
    open_scoring_service,
)
from engine.media.vad import TurnConfig, TurnDetector, TurnEvent
from engine.metrics import TURN_ANALYSIS, TURN_DECISIONS, TURN_QUESTIONS

__all__ = ["AnalyzedTurns", "SharedSmartTurn", "TurnStep", "live_policy", "turn_step"]

log = logging.getLogger(__name__)

TurnStep = Callable[[PCM, int], tuple[TurnEvent, ...]]
"""A call's turn step: 8 kHz int16 caller audio and its media time (ms) → turn events."""
_FRAME_SAMPLES = FRAME_MS * 8
_NONE: tuple[TurnEvent, ...] = ()
_EMPTY = np.empty(0, dtype=np.int16)


class AnalyzedTurns:
    """A :class:`TurnTaker` behind the turn detector's ``process`` (see the module docstring).

    Frames of other sizes than 20 ms are re-cut, as the detector does.
    """

    __slots__ = ("_feed", "_pending", "_pending_ts", "taker")

    def __init__(self, taker: TurnTaker) -> None:
        self.taker = taker
        self._feed = taker.feed
        self._pending = _EMPTY
        self._pending_ts = 0

    def process(self, pcm: PCM, timestamp: int) -> tuple[TurnEvent, ...]:
        """Feed caller audio; return the turn events it completes (usually none)."""
        if len(pcm) == _FRAME_SAMPLES and not len(self._pending):
            events = self._feed(pcm, timestamp)
            return _as_turn_events(events) if events else _NONE
        if not len(self._pending):
            self._pending_ts = timestamp
        self._pending = np.concatenate((self._pending, pcm))
        out: tuple[TurnEvent, ...] = _NONE
        while len(self._pending) >= _FRAME_SAMPLES:
            frame = self._pending[:_FRAME_SAMPLES]
            self._pending = self._pending[_FRAME_SAMPLES:]
            out += _as_turn_events(self._feed(frame, self._pending_ts))
            self._pending_ts += FRAME_MS
        return out


def _as_turn_events(events: tuple[PolicyEvent, ...]) -> tuple[TurnEvent, ...]:
    out: list[TurnEvent] = []
    for event in events:
        if type(event) is EndOfTurn:
            TURN_DECISIONS.labels(event.reason).inc()
            out += (event.utterance, event.speech_ended)
        elif type(event) is SpeechStarted:
            out.append(event)
    return tuple(out)


def _count_answer(outcome: str, seconds: float) -> None:
    TURN_QUESTIONS.labels(outcome).inc()
    if outcome == "answered":
        TURN_ANALYSIS.observe(seconds)


def live_policy(vad: TurnConfig, policy: PolicyConfig) -> PolicyConfig:
    """``policy`` as a call runs it: the call's VAD tuning (``vad``: aggressiveness, speech
    start, noise gate) with the policy's short candidate-pause hangover, and the call's VAD
    itself (``vad``, its hangover included) as the rule a turn falls back to."""
    segmenter = replace(
        vad,
        hangover_ms=policy.vad.hangover_ms,
        post_roll_ms=min(vad.post_roll_ms, policy.vad.hangover_ms),
        max_utterance_ms=policy.vad.max_utterance_ms,
    )
    return replace(policy, vad=segmenter, fallback_hangover_ms=vad.hangover_ms, vad_rule=vad)


def turn_step(
    nursery: trio.Nursery,
    analyzer: TurnAnalyzer | None,
    vad: TurnConfig,
    policy: PolicyConfig,
    *,
    timeout_s: float,
) -> tuple[TurnStep, TurnTaker | None]:
    """One call's turn step: the plain VAD (``analyzer`` ``None``: exactly the detector at
    ``vad``), or the end-of-turn ``policy`` asking ``analyzer`` from tasks in ``nursery``
    (each question with a deadline of ``timeout_s``). Also the turn-taker, when there is one."""
    if analyzer is None:
        return TurnDetector(vad).process, None
    taker = TurnTaker(
        nursery, analyzer, live_policy(vad, policy), timeout_s=timeout_s, on_answer=_count_answer
    )
    return AnalyzedTurns(taker).process, taker


def _load_smart_turn() -> ScoringModel:
    from engine.media.turn.smart_turn import SmartTurnModel  # onnxruntime: only when used

    return SmartTurnModel()


class SharedSmartTurn:
    """The process's Smart Turn v3, shared by every call that uses it (an analyzer itself).

    Run :meth:`run` in the server's nursery. It loads the model (~0.5 s, in a thread) when a
    call first asks for :meth:`analyzer`; times two inferences;
    then serves questions through a :class:`ScoringService` of ``threads`` worker threads
    (default: the cores but one, which is the media loop's) that refuses at once what it could
    not answer within ``max_wait_s``. Until the model is loaded, or if loading failed, questions
    are refused the same way: those turns fall back to the VAD rule.
    """

    def __init__(
        self,
        *,
        threads: int | None = None,
        max_wait_s: float = 0.8,
        max_batch: int = 1,
        load: Callable[[], ScoringModel] = _load_smart_turn,
    ) -> None:
        self.threads = threads or default_threads()
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self._load = load
        self._wanted = trio.Event()
        self.service: ScoringService | None = None
        """The scoring service, once the model is loaded."""

    def analyzer(self) -> TurnAnalyzer:
        """The analyzer for a call (this object); asks for the model to be loaded."""
        self._wanted.set()
        return self

    async def probability(self, question: Question) -> float:
        """Smart Turn's P(complete) for the question's audio, via the shared service."""
        service = self.service
        if service is None:
            raise ServiceSaturated("Smart Turn is not loaded")
        return await service.probability(question.audio)

    def statistics(self) -> ServiceStatistics | None:
        """The service's counters, once it runs."""
        return self.service.statistics() if self.service is not None else None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the model when first wanted and serve questions until cancelled (a load failure
        is logged; every turn then ends by the VAD rule)."""
        task_status.started()
        await self._wanted.wait()
        try:
            model = await trio.to_thread.run_sync(self._load, abandon_on_cancel=True)
            window_s = await trio.to_thread.run_sync(_time_inference, model, abandon_on_cancel=True)
        except Exception:
            log.exception("could not load Smart Turn: every turn ends by the VAD rule")
            return
        log.info(
            "Smart Turn loaded: %.0f ms per decision, %d worker thread(s)",
            window_s * 1000,
            self.threads,
        )
        async with open_scoring_service(
            model,
            threads=self.threads,
            max_batch=self.max_batch,
            max_wait_s=self.max_wait_s,
            window_s=window_s,
        ) as service:
            self.service = service
            try:
                await trio.sleep_forever()
            finally:
                self.service = None


def _time_inference(model: ScoringModel, runs: int = 2) -> float:
    """Seconds of the last of ``runs`` inferences of a full window (the first warms up)."""
    window = np.zeros(8 * 8000, dtype=np.int16)
    seconds = 0.0
    for _ in range(runs):
        started = perf_counter()
        model.probabilities([window])
        seconds = perf_counter() - started
    return seconds
