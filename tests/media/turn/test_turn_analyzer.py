"""Smart Turn's decisions on recorded speech, the batched service, and the fallbacks (trio)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest
import trio
import trio.lowlevel
import trio.testing
from turn_clips import clip, frames, silence, upto

from engine.media.frames import PCM
from engine.media.turn import (
    EndOfTurn,
    PolicyConfig,
    Question,
    ScoringService,
    ServiceSaturated,
    SmartTurnAnalyzer,
    TurnTaker,
    VadRule,
    open_scoring_service,
    open_turn_taker,
)
from engine.media.turn.smart_turn import SmartTurnModel


@pytest.fixture(scope="module")
def model() -> SmartTurnModel:
    return SmartTurnModel()


async def play(
    taker: TurnTaker, pcm: PCM, start_ms: int = 0, *, answer_next_frame: bool = False
) -> list[EndOfTurn]:
    """Feed ``pcm`` in media time, one frame per 20 ms of the (mock) clock; with
    ``answer_next_frame``, wait for each question's answer before the next frame instead (so
    a real model's speed does not change the outcome)."""
    ends = []
    for k, frame in enumerate(frames(pcm)):
        events = taker.feed(frame, start_ms + 20 * k)
        ends += [e for e in events if isinstance(e, EndOfTurn)]
        if answer_next_frame and any(isinstance(e, Question) for e in events):
            while taker._answers == []:
                await trio.sleep(0.005)
        else:
            await trio.sleep(0.02)
    return ends


# -- the model on recorded clips --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "seconds"),
    [("austen_0870", None), ("ve9qrp", 21.9)],  # "... to do for them." / "... airport is."
)
def test_complete_sentences_score_complete(
    model: SmartTurnModel, name: str, seconds: float | None
) -> None:
    pcm = clip(name) if seconds is None else upto(name, seconds)
    assert model.probability(np.concatenate((pcm, silence(200)))) > 0.9


@pytest.mark.parametrize(
    ("name", "seconds"),
    [("jfk", 4.5), ("ve9qrp", 0.85), ("austen_0880", 1.3)],  # "ask not", "which is", "he was not"
)
def test_clauses_cut_mid_sentence_score_incomplete(
    model: SmartTurnModel, name: str, seconds: float
) -> None:
    assert model.probability(np.concatenate((upto(name, seconds), silence(200)))) < 0.2


async def test_the_turn_taker_ends_a_sentence_by_the_model_and_waits_out_a_cut_clause(
    model: SmartTurnModel,
) -> None:
    async with (
        open_scoring_service(model) as service,
        open_turn_taker(SmartTurnAnalyzer(service), timeout_s=30) as taker,
    ):
        pcm = np.concatenate((clip("austen_0870"), silence(1500)))
        ends = await play(taker, pcm, answer_next_frame=True)
        assert [e.reason for e in ends] == ["model"]
        assert ends[0].probability is not None and ends[0].probability >= 0.9
        pcm = np.concatenate((upto("austen_0880", 1.3), silence(1500)))  # "he was not"
        ends = await play(taker, pcm, 10_000, answer_next_frame=True)
        assert [e.reason for e in ends] == ["max_silence"]  # every answer said: not yet
        assert taker.statistics().answered >= 3
        assert taker.statistics().fallback_turns == 0


# -- the service: batching, the event loop, fallbacks --------------------------------------------


class HeldModel:
    """Blocks its first run until released; records batch sizes; scores = window length."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches: list[int] = []

    def probabilities(self, windows: Sequence[PCM]) -> list[float]:
        self.batches.append(len(windows))
        if len(self.batches) == 1:
            assert self.release.wait(30)
        return [len(w) / 1000 for w in windows]


async def test_concurrent_requests_are_batched_and_the_loop_keeps_running() -> None:
    held = HeldModel()
    results: dict[int, float] = {}
    ticks = 0
    async with open_scoring_service(held, threads=1, max_batch=64) as service:

        async def ask(n: int) -> None:
            results[n] = await service.probability(np.zeros(n, dtype=np.int16))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, 1000)
            while not held.batches:  # the first request holds the only thread
                await trio.sleep(0.001)
            for n in range(2000, 22_000, 1000):
                nursery.start_soon(ask, n)
            while ticks < 50:  # the loop runs while the model blocks its thread
                ticks += 1
                await trio.lowlevel.checkpoint()
            assert service.statistics().queued + service.statistics().busy_threads >= 1
            held.release.set()
        stats = service.statistics()
    assert held.batches == [1, 20]  # everyone who waited went in one batch
    assert results == {n: n / 1000 for n in range(1000, 22_000, 1000)}
    assert stats.batches == 2 and stats.largest_batch == 20 and stats.requests == 21


async def test_requests_abandoned_before_their_turn_are_not_run() -> None:
    held = HeldModel()
    async with open_scoring_service(held, threads=1) as service:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service.probability, np.zeros(10, dtype=np.int16))
            while not held.batches:
                await trio.sleep(0.001)
            with trio.move_on_after(0.05):
                await service.probability(np.zeros(10, dtype=np.int16))
            held.release.set()
        for _ in range(1000):
            if service.statistics().abandoned:
                break
            await trio.sleep(0.01)
        assert service.statistics().abandoned == 1
    assert held.batches == [1]


class Failing:
    async def probability(self, question: Question) -> float:
        raise RuntimeError("model broke")


class Stalled:
    async def probability(self, question: Question) -> float:
        await trio.sleep_forever()
        raise AssertionError


@pytest.mark.parametrize("analyzer", [Failing(), Stalled()], ids=["raises", "stalls"])
async def test_a_failed_or_stalled_analyzer_falls_back_to_the_vad_rule(
    analyzer: Failing | Stalled, autojump_clock: trio.testing.MockClock
) -> None:
    config = PolicyConfig(fallback_hangover_ms=500, max_silence_ms=3000)
    async with open_turn_taker(analyzer, config, timeout_s=0.1) as taker:
        ends = await play(taker, np.concatenate((clip("austen_0870"), silence(1500))))
        stats = taker.statistics()
    assert [e.reason for e in ends] == ["fallback"]
    assert ends[0].decided_at - ends[0].speech_ended.timestamp <= 520  # the VAD rule, not 3 s
    assert stats.fallback_turns == 1
    assert (stats.failed, stats.timed_out) == ((1, 0) if isinstance(analyzer, Failing) else (0, 1))


async def test_the_vad_rule_as_an_analyzer_and_as_no_analyzer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pcm = np.concatenate((clip("austen_0870"), silence(1500)))
    async with open_turn_taker(None, PolicyConfig(fallback_hangover_ms=500)) as taker:
        plain = await play(taker, pcm)
        assert taker.statistics().questions == 0
    config = PolicyConfig(max_silence_ms=3000)
    async with open_turn_taker(VadRule(500), config) as taker:
        ruled = await play(taker, pcm)
    assert [e.reason for e in plain] == ["vad"]
    assert [e.reason for e in ruled] == ["model"]
    assert plain[0].decided_at - plain[0].speech_ended.timestamp == 500
    assert 500 <= ruled[0].decided_at - ruled[0].speech_ended.timestamp <= 540


async def test_under_overload_the_newest_requests_go_first_in_bounded_batches() -> None:
    held = HeldModel()
    async with open_scoring_service(held, threads=1, max_batch=4, newest_first=True) as service:
        order: list[int] = []

        async def ask(n: int) -> None:
            await service.probability(np.zeros(n, dtype=np.int16))
            order.append(n)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, 1)
            while not held.batches:
                await trio.sleep(0.001)
            for n in range(2, 12):
                nursery.start_soon(ask, n)
                await trio.sleep(0.001)  # arrive in order 2, 3, …, 11
            held.release.set()
    assert held.batches == [1, 4, 4, 2]
    assert sorted(order[1:5]) == [8, 9, 10, 11]  # the newest four first
    assert sorted(order[9:]) == [2, 3]


# -- the bound: refuse at once what cannot be answered in time ----------------------------------


async def test_a_saturated_service_refuses_at_once_what_it_could_not_answer_in_time() -> None:
    held = HeldModel()
    window = np.zeros(8000, dtype=np.int16)
    async with open_scoring_service(held, threads=1, max_wait_s=1.0, window_s=0.4) as service:
        assert service.expected_wait() == pytest.approx(0.4)
        answers: list[float] = []

        async def ask() -> None:
            answers.append(await service.probability(window))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)  # runs: answered in 0.4 s
            while not held.batches:
                await trio.sleep(0.001)
            nursery.start_soon(ask)  # queued behind it: 0.8 s
            await trio.sleep(0.01)
            assert service.expected_wait() > 1.0
            request = service.probability(window)  # 1.2 s: refused on its first step
            with pytest.raises(ServiceSaturated):
                request.send(None)  # raises before it would ever wait
            held.release.set()
        stats = service.statistics()
    assert answers == [8.0, 8.0]
    assert (stats.requests, stats.refused, stats.scored) == (3, 1, 2)
    assert stats.window_ms is not None  # measured from the runs


async def test_closing_the_service_answers_its_waiting_callers() -> None:
    held = HeldModel()
    window = np.zeros(10, dtype=np.int16)
    errors: list[BaseException] = []

    async def ask(service: ScoringService) -> None:
        try:
            await service.probability(window)
        except ServiceSaturated as exc:
            errors.append(exc)

    async with trio.open_nursery() as callers:
        async with open_scoring_service(held, threads=1) as service:
            callers.start_soon(ask, service)  # runs, blocked
            callers.start_soon(ask, service)  # waits
            while not held.batches:
                await trio.sleep(0.001)
            await trio.sleep(0.01)
        held.release.set()
    assert len(errors) == 2  # neither waits for a service that is gone


class Busy:
    async def probability(self, question: Question) -> float:
        raise ServiceSaturated("busy")


async def test_a_refused_question_falls_back_to_the_vad_rule_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcomes: list[str] = []
    config = PolicyConfig(fallback_hangover_ms=500, max_silence_ms=3000)
    async with open_turn_taker(
        Busy(), config, timeout_s=10, on_answer=lambda o, _: outcomes.append(o)
    ) as taker:
        ends = await play(taker, np.concatenate((clip("austen_0870"), silence(1500))))
        stats = taker.statistics()
    assert [e.reason for e in ends] == ["fallback"]
    assert ends[0].decided_at - ends[0].speech_ended.timestamp == 500  # not after 10 s
    assert (stats.saturated, stats.failed, stats.timed_out, stats.fallback_turns) == (1, 0, 0, 1)
    assert outcomes == ["saturated"]


class Instant:
    def probabilities(self, windows: Sequence[PCM]) -> list[float]:
        return [0.5] * len(windows)


async def test_an_idle_service_tries_however_slow_it_was_and_so_learns_it_is_fast_again() -> None:
    window = np.zeros(10, dtype=np.int16)
    async with open_scoring_service(Instant(), max_wait_s=1.0, window_s=30.0) as service:
        assert service.expected_wait() == pytest.approx(30.0)
        assert await service.probability(window) == 0.5  # idle: tried, not refused
        for _ in range(20):
            await service.probability(window)
        stats = service.statistics()
    assert stats.refused == 0 and stats.window_ms is not None and stats.window_ms < 1000
