"""Analyzers (who answers a :class:`~engine.media.turn.policy.Question`) and one call's trio side.

- :class:`TurnAnalyzer`: the interface a custom stage can implement itself — an async
  ``probability(question)`` returning P(turn complete).
- :class:`VadRule`: the plain VAD rule as an analyzer (complete once the pause is long enough).
- :class:`SmartTurnAnalyzer`: Smart Turn v3 through a shared
  :class:`~engine.media.turn.service.ScoringService` (batched, in worker threads).
- :class:`TurnTaker`: one call's end-of-turn, for the media reader loop. Its :meth:`TurnTaker.feed`
  is synchronous and cheap (no inference): it feeds the :class:`EndOfTurnPolicy`, starts a
  background task per question, and applies the answers that arrived since the previous frame.
  Each question has a deadline (``timeout_s``); an analyzer that raises or misses it is a
  *fallback*: the policy ends that turn by the VAD rule. An analyzer that cannot take a question
  now raises :class:`~engine.media.turn.service.ServiceSaturated` (the shared service does when
  it could not answer in time): the turn falls back at once. :meth:`TurnTaker.statistics` counts,
  and ``on_answer`` hears each question's outcome (``answered``, ``saturated``, ``failed``,
  ``timed_out``) with its wall-clock seconds.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Protocol

import trio

from engine.media.frames import PCM
from engine.media.turn.policy import EndOfTurnPolicy, PolicyConfig, PolicyEvent, Question
from engine.media.turn.service import ScoringService, ServiceSaturated

__all__ = [
    "AnswerObserver",
    "SmartTurnAnalyzer",
    "TurnAnalyzer",
    "TurnTaker",
    "TurnTakerStatistics",
    "VadRule",
    "open_turn_taker",
]


class TurnAnalyzer(Protocol):
    """Answers whether a caller's turn is complete. Implement it to plug in your own."""

    async def probability(self, question: Question) -> float:
        """P(the turn in ``question.audio`` is complete), in [0, 1]. May raise: the turn then
        falls back to the VAD rule."""


class VadRule:
    """The VAD rule as an analyzer: complete (1.0) once the pause reaches ``hangover_ms``."""

    def __init__(self, hangover_ms: int = 500) -> None:
        self.hangover_ms = hangover_ms

    async def probability(self, question: Question) -> float:
        """1.0 if ``question.silence_ms`` ≥ the hangover, else 0.0."""
        return 1.0 if question.silence_ms >= self.hangover_ms else 0.0


class SmartTurnAnalyzer:
    """Smart Turn v3 via a shared :class:`ScoringService` (batched across calls)."""

    def __init__(self, service: ScoringService) -> None:
        self.service = service

    async def probability(self, question: Question) -> float:
        """The model's P(complete) for the question's audio."""
        return await self.service.probability(question.audio)


AnswerObserver = Callable[[str, float], None]
"""Told each question's outcome (``answered``, ``saturated``, ``failed``, ``timed_out``) and
the seconds it took."""


@dataclass(frozen=True, slots=True)
class TurnTakerStatistics:
    """Counters of one :class:`TurnTaker`."""

    questions: int
    answered: int
    failed: int
    """Questions whose analyzer raised (other than :class:`ServiceSaturated`)."""
    saturated: int
    """Questions refused at once (the analyzer raised :class:`ServiceSaturated`)."""
    timed_out: int
    """Questions not answered within ``timeout_s``."""
    fallback_turns: int
    """Turns ended by the VAD rule because a question failed or timed out."""
    answer_ms_max: float
    """Slowest answer so far (wall clock)."""


class TurnTaker:
    """One call's end-of-turn (see the module docstring). Build it with :func:`open_turn_taker`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        analyzer: TurnAnalyzer | None,
        config: PolicyConfig | None = None,
        *,
        timeout_s: float = 0.8,
        on_answer: AnswerObserver | None = None,
    ) -> None:
        config = config or PolicyConfig()
        if analyzer is None:
            config = replace(config, schedule=())
        self.policy = EndOfTurnPolicy(config)
        self.analyzer = analyzer
        self.timeout_s = timeout_s
        self._on_answer = on_answer
        self._nursery = nursery
        self._answers: list[tuple[int, float | None]] = []
        self._answered = 0
        self._failed = 0
        self._saturated = 0
        self._timed_out = 0
        self._slowest = 0.0

    def feed(self, pcm: PCM, timestamp: int) -> tuple[PolicyEvent, ...]:
        """Feed one 20 ms caller frame; return the policy's events (answers applied first).

        Returns :class:`~engine.media.frames.SpeechStarted` (barge-in: send ``clear``),
        :class:`~engine.media.turn.policy.EndOfTurn` (hand the utterance to the stage) and the
        :class:`~engine.media.turn.policy.Question` s it has sent to the analyzer (for logs).
        """
        answered: tuple[PolicyEvent, ...] = ()
        if self._answers:
            answers, self._answers = self._answers, []
            for question_id, probability in answers:
                answered += self.policy.answer(question_id, probability)
        events = self.policy.feed(pcm, timestamp)
        if not events:  # most frames
            return answered
        for event in events:
            if type(event) is Question:
                self._nursery.start_soon(self._ask, event)
        return answered + events if answered else events

    def set_transcript(self, text: str | None) -> None:
        """The words of the open turn so far (for pipelines that transcribe)."""
        self.policy.set_transcript(text)

    def statistics(self) -> TurnTakerStatistics:
        """The counters so far."""
        return TurnTakerStatistics(
            questions=self.policy.questions,
            answered=self._answered,
            failed=self._failed,
            saturated=self._saturated,
            timed_out=self._timed_out,
            fallback_turns=self.policy.fallback_turns,
            answer_ms_max=round(self._slowest * 1000, 1),
        )

    async def _ask(self, question: Question) -> None:
        assert self.analyzer is not None
        started = time.perf_counter()
        probability: float | None = None
        outcome = "answered"
        with trio.move_on_after(self.timeout_s) as scope:
            try:
                probability = float(await self.analyzer.probability(question))
            except ServiceSaturated:
                outcome = "saturated"
                self._saturated += 1
            except Exception:
                outcome = "failed"
                self._failed += 1
        seconds = time.perf_counter() - started
        if scope.cancelled_caught:
            outcome = "timed_out"
            self._timed_out += 1
        elif probability is not None:
            self._answered += 1
            self._slowest = max(self._slowest, seconds)
        self._answers.append((question.id, probability))
        if self._on_answer is not None:
            self._on_answer(outcome, seconds)


@asynccontextmanager
async def open_turn_taker(
    analyzer: TurnAnalyzer | None,
    config: PolicyConfig | None = None,
    *,
    timeout_s: float = 0.8,
    on_answer: AnswerObserver | None = None,
) -> AsyncIterator[TurnTaker]:
    """A :class:`TurnTaker` whose questions run in a nursery that lives as long as the block.

    ``analyzer=None`` is the plain VAD rule (no questions).
    """
    async with trio.open_nursery() as nursery:
        taker = TurnTaker(nursery, analyzer, config, timeout_s=timeout_s, on_answer=on_answer)
        try:
            yield taker
        finally:
            nursery.cancel_scope.cancel()
