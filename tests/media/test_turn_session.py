"""End of turn in served calls (issue #12): Smart Turn against the VAD on a recorded sentence,
fallbacks when the analyzer fails, stalls or is not there, and no call held up by another's
analysis. In-process server, real loopback sockets, real speech (tests/data/speech)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import trio
from prometheus_client import REGISTRY

from engine.cli import _parser
from engine.media.frames import PCM, Utterance
from engine.media.session import CallOutcome, SessionConfig
from engine.media.stage import CallContext, Stage
from engine.media.turn import Question, ScoringModel, SmartTurnAnalyzer, open_scoring_service
from engine.media.turn.analyzer import TurnAnalyzer
from engine.media.turn.live import SharedSmartTurn
from engine.media.turn.smart_turn import SmartTurnModel
from engine.media.vad import TurnConfig
from engine.server import ServerConfig, VoiceServer
from engine.testing import StreamRecord, open_inbound_call
from pipelines.echo import Echo
from pipelines.turn_echo import TurnEcho

TOKEN = "test-auth-token"
SPEECH = Path(__file__).resolve().parent.parent / "data" / "speech"
# "He was not an ill-disposed young man, ‖ unless to be rather cold-hearted and rather selfish is
# to be ill-disposed:" — one sentence, read with a 0.52 s pause at the join of the two clips
# (see tests/data/SPEECH_SOURCES.md). Times in ms from the start of the audio.
SENTENCE = ("austen_0880", "austen_0890")
PAUSE = (2740, 3270)
SPEECH_END = 8300


@cache
def sentence() -> bytes:
    return b"".join((SPEECH / f"{name}.ulaw").read_bytes() for name in SENTENCE)


@cache
def smart_turn_model() -> SmartTurnModel:
    return SmartTurnModel()


class Recording(TurnEcho):
    """turn-echo that notes every utterance it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.utterances: list[Utterance] = []

    async def on_utterance(self, call: CallContext, utterance: Utterance) -> None:
        self.utterances.append(utterance)
        await super().on_utterance(call, utterance)


def factory(make: Callable[[], Recording]) -> tuple[Callable[[], Stage], list[Recording]]:
    """A stage factory, and the stages it has made."""
    made: list[Recording] = []

    def stage() -> Stage:
        made.append(make())
        return made[-1]

    return stage, made


@asynccontextmanager
async def running_server(
    factory: Callable[[], Stage],
    session: SessionConfig,
    smart_turn: SharedSmartTurn | None = None,
) -> AsyncIterator[tuple[VoiceServer, str]]:
    server = VoiceServer(
        ServerConfig(stage_factory=factory, auth_token=TOKEN, port=0, session=session)
    )
    if smart_turn is not None:
        server.switchboard.smart_turn = smart_turn
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        yield server, url
        server.shutdown()


async def one_call(
    url: str, server: VoiceServer, audio: bytes, then_s: float = 2.5
) -> tuple[StreamRecord, CallOutcome]:
    """Say ``audio`` from the call's first frame on, listen ``then_s`` more; the call's
    record and outcome."""
    async with open_inbound_call(url, TOKEN) as call:
        await call.say(audio)  # queued before the first tick: audio time = media time
        (session,) = [s for s in server.sessions if s.call_sid == call.call_sid]
        await call.pause(then_s)
    with trio.fail_after(5):
        while session.outcome is None:
            await trio.sleep(0.01)
    return call.record, session.outcome


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- the sentence with a pause inside -------------------------------------------------------------


async def test_smart_turn_waits_out_a_pause_inside_a_sentence_where_the_vad_at_300_ms_cuts_in() -> (
    None
):
    recording, stages = factory(Recording)
    # A generous deadline, so that a busy test machine slows the model's answers down rather
    # than turning them into the VAD rule.
    smart = SessionConfig(turn_taking="smart-turn", turn_timeout=3.0)
    shared = SharedSmartTurn(threads=1, max_wait_s=3.0, load=smart_turn_model)
    answered = sample("voice_engine_turn_questions_total", outcome="answered")
    async with running_server(recording, smart, shared) as (server, url):
        record, outcome = await one_call(url, server, sentence())
    (stage,) = stages
    assert len(stage.utterances) == 1  # one reply, to the whole sentence
    (utterance,) = stage.utterances
    assert utterance.start < 500 and utterance.end >= SPEECH_END - 200
    heard = record.first_heard_at()
    assert heard is not None and heard >= SPEECH_END  # after the real end, not at the pause
    assert outcome.turns is not None
    assert outcome.turns.answered >= 2 and outcome.turns.fallback_turns == 0
    assert sample("voice_engine_turn_questions_total", outcome="answered") >= answered + 2

    stages.clear()
    vad = SessionConfig(turn=TurnConfig(hangover_ms=300), turn_taking="vad")
    async with running_server(recording, vad) as (server, url):
        record, outcome = await one_call(url, server, sentence())
    (stage,) = stages
    assert len(stage.utterances) >= 2
    assert stage.utterances[0].end <= PAUSE[1]  # the first reply answers half a sentence
    heard = record.first_heard_at()
    assert heard is not None and heard < SPEECH_END
    assert outcome.turns is None  # the plain VAD: no analyzer


# -- fallbacks ------------------------------------------------------------------------------------


class Failing:
    async def probability(self, question: Question) -> float:
        raise RuntimeError("the model broke")


class Stalled:
    async def probability(self, question: Question) -> float:
        await trio.sleep_forever()
        raise AssertionError


def analyzed_by(analyzer: TurnAnalyzer) -> type[Recording]:
    class Analyzed(Recording):
        def turn_analyzer(self) -> TurnAnalyzer:
            return analyzer

    return Analyzed


@pytest.mark.parametrize(
    ("analyzer", "outcome"), [(Failing(), "failed"), (Stalled(), "timed_out")], ids=str
)
async def test_a_failing_or_stalled_analyzer_still_ends_the_turn_by_the_vad_rule(
    analyzer: TurnAnalyzer, outcome: str
) -> None:
    config = SessionConfig(turn=TurnConfig(hangover_ms=500), turn_timeout=0.2)
    counted = sample("voice_engine_turn_questions_total", outcome=outcome)
    fallbacks = sample("voice_engine_turn_decisions_total", outcome="fallback")
    audio = (SPEECH / "austen_0870.ulaw").read_bytes()  # one sentence, no pause inside
    make, stages = factory(analyzed_by(analyzer))
    async with running_server(make, config) as (server, url):
        record, result = await one_call(url, server, audio)
    (stage,) = stages
    assert len(stage.utterances) == 1
    assert record.first_heard_at() is not None  # the caller got the turn's reply
    assert result.turns is not None and result.turns.fallback_turns == 1
    assert sample("voice_engine_turn_questions_total", outcome=outcome) == counted + 1
    assert sample("voice_engine_turn_decisions_total", outcome="fallback") == fallbacks + 1


class SmartTurnStage(Recording):
    turn_taking = "smart-turn"


async def test_a_stage_that_asks_for_smart_turn_before_it_is_loaded_falls_back_at_once() -> None:
    loaded = threading.Event()

    def slow_load() -> ScoringModel:  # still loading when the call ends
        loaded.wait(30)
        raise RuntimeError("not needed")

    shared = SharedSmartTurn(load=slow_load)
    saturated = sample("voice_engine_turn_questions_total", outcome="saturated")
    make, stages = factory(SmartTurnStage)
    try:
        async with running_server(make, SessionConfig(turn_taking="vad"), shared) as (server, url):
            _, result = await one_call(url, server, sentence())
    finally:
        loaded.set()
    assert shared.service is None
    assert result.turns is not None  # the stage's choice, on a VAD server
    assert result.turns.saturated >= 1 and result.turns.timed_out == 0
    assert result.turns.fallback_turns == len(stages[0].utterances) >= 1
    assert sample("voice_engine_turn_questions_total", outcome="saturated") > saturated


# -- one call's slow analysis and the others ------------------------------------------------------


class SlowModel:
    """Takes ``seconds`` per window in its worker thread, and notes how many frames the other
    calls got back meanwhile (none if the inference held the event loop)."""

    def __init__(self, seconds: float, others: list[StreamRecord]) -> None:
        self.seconds = seconds
        self.others = others
        self.echoed_meanwhile: list[int] = []

    def probabilities(self, windows: Sequence[PCM]) -> list[float]:
        before = sum(len(record.received) for record in self.others)
        time.sleep(self.seconds * len(windows))
        after = sum(len(record.received) for record in self.others)
        self.echoed_meanwhile.append(after - before)
        return [0.0] * len(windows)


def assert_echoed_everything(record: StreamRecord) -> None:
    echoed = b"".join(payload for _, payload in record.received)
    assert len(echoed) > 0
    assert echoed == record.mic[: len(echoed)]
    assert len(record.mic) - len(echoed) <= 5 * 160


class SlowlyAnalyzedEcho(Echo):
    """Echoes every frame, and ends turns with the analyzer it is given."""

    turn_detection = True
    analyzer: TurnAnalyzer

    def turn_analyzer(self) -> TurnAnalyzer:
        return self.analyzer


async def test_a_call_whose_analysis_is_slow_holds_up_no_frames_of_its_own_or_of_others() -> None:
    others: list[StreamRecord] = []
    slow = SlowModel(1.5, others)
    stages: list[Stage] = []

    def make() -> Stage:  # the first call is the slowly analysed one
        stages.append(SlowlyAnalyzedEcho() if not stages else Echo())
        return stages[-1]

    config = SessionConfig(turn_timeout=0.5)  # asked at 300 ms of silence: fallback at 800
    async with (
        open_scoring_service(slow, threads=1) as service,
        running_server(make, config) as (server, url),
    ):
        SlowlyAnalyzedEcho.analyzer = SmartTurnAnalyzer(service)

        async def caller() -> None:
            async with open_inbound_call(url, TOKEN) as call:
                others.append(call.record)
                await call.say(sentence())
                await call.pause(1.5)

        async with open_inbound_call(url, TOKEN) as analysed:
            await analysed.pause(0.1)  # its stage is made first
            (session,) = server.sessions
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(caller)
                await analysed.say(sentence())
            await analysed.pause(1.5)
        with trio.fail_after(5):
            while session.outcome is None:
                await trio.sleep(0.01)
    assert len(others) == 4
    for record in [*others, analysed.record]:
        assert_echoed_everything(record)
    # Every slow inference ran while the other calls' frames came back: it held no loop.
    assert slow.echoed_meanwhile and min(slow.echoed_meanwhile) > 0
    turns = session.outcome.turns
    assert turns is not None and turns.questions >= 2  # the sentence's pause, its end
    assert turns.timed_out >= 1 and turns.fallback_turns >= 1  # and the turn still ended


# -- choosing -------------------------------------------------------------------------------------


def test_serve_takes_turn_vad_or_smart_turn_and_smart_turn_is_the_default() -> None:
    parse = _parser().parse_args
    assert parse(["serve"]).turn == SessionConfig().turn_taking == "smart-turn"
    assert parse(["serve", "--turn", "vad"]).turn == "vad"
    args = parse(["serve", "--turn", "smart-turn", "--hangover-ms", "700", "--turn-threads", "2"])
    assert (args.turn, args.hangover_ms, args.turn_threads) == ("smart-turn", 700, 2)
    with pytest.raises(SystemExit):
        parse(["serve", "--turn", "model"])
    with pytest.raises(ValueError, match="turn_taking"):
        replace(SessionConfig(), turn_taking="model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="turn_threads"):
        replace(SessionConfig(), turn_threads=0)


def test_sentence_material_is_what_the_tests_assume() -> None:
    from engine.media.codec import ulaw_decode
    from engine.testing import speech_bounds

    pcm = ulaw_decode(sentence())
    start, end = speech_bounds(sentence())
    assert start < 500 and abs(end - SPEECH_END) <= 350
    first = len((SPEECH / f"{SENTENCE[0]}.ulaw").read_bytes()) // 8
    assert PAUSE[0] < first < PAUSE[1]
    rms = float(np.sqrt(np.mean(pcm[PAUSE[0] * 8 + 400 : PAUSE[1] * 8 - 400].astype(float) ** 2)))
    assert rms < 300  # a real pause


async def test_the_default_server_loads_smart_turn_only_when_a_call_ends_turns_with_it() -> None:
    loads: list[int] = []

    def counted_load() -> ScoringModel:
        loads.append(1)
        return smart_turn_model()

    shared = SharedSmartTurn(threads=1, max_wait_s=3.0, load=counted_load)
    stages: list[Stage] = []

    def make() -> Stage:  # an echo call first (no turns), then a turn-taking one
        stages.append(Echo() if not stages else Recording())
        return stages[-1]

    async with running_server(make, SessionConfig(), shared) as (server, url):
        _, echoed = await one_call(url, server, sentence()[:8000], then_s=0.5)
        assert echoed.turns is None and loads == [] and shared.service is None
        _, analysed = await one_call(url, server, sentence())
        assert loads == [1] and shared.service is not None
    assert analysed.turns is not None and analysed.turns.answered >= 1
