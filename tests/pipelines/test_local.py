"""The offline voice agent: whole calls through a real server, and how it fails."""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager

import numpy as np
import trio

from conftest import spoken
from engine.media.codec import FRAME_BYTES, SAMPLE_RATE, resample, ulaw_decode, ulaw_encode
from engine.media.stage import Stage
from engine.server import ServerConfig, VoiceServer
from engine.testing import StreamRecord, open_inbound_call
from engine.tts import speak_ulaw, synthesize_chunks
from pipelines.local import APOLOGY, LocalAgent
from pipelines.responder import RuleResponder
from pipelines.stt import Recognizer

SILENCE = b"\xff" * FRAME_BYTES
TOKEN = "test-auth-token"


def speech_end_ms(audio: bytes) -> int:
    """Where the last non-silent 20 ms frame of μ-law ``audio`` ends."""
    frames = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    voiced = [i for i, frame in enumerate(frames) if frame.strip(b"\xff\x7f")]
    return (voiced[-1] + 1) * 20


def transcribe(ulaw: bytes) -> str:
    """What the recognizer makes of 8 kHz μ-law audio (after 0.5 s of silence), in 20 ms frames."""
    pcm = ulaw_decode(SILENCE * 25 + ulaw)
    with Recognizer() as recognizer:
        recognizer.begin()
        for i in range(0, len(pcm), 160):
            recognizer.feed(pcm[i : i + 160])
        return recognizer.finish()


def spoken_reply(text: str) -> bytes:
    """``text`` as the agent speaks it: clause by clause, at 8 kHz, as μ-law."""
    clauses = [resample(pcm, rate, SAMPLE_RATE) for pcm, rate in synthesize_chunks(text)]
    return ulaw_encode(np.concatenate(clauses))


def envelope(ulaw: bytes) -> np.ndarray:
    """Level (dB) of each 20 ms frame."""
    x = ulaw_decode(ulaw).astype(np.float64)
    n = len(x) // 160
    return 10 * np.log10((x[: n * 160].reshape(n, 160) ** 2).mean(axis=1) + 1)


def envelope_match(heard: bytes, expected: bytes) -> float:
    """How well the level contour of ``expected`` matches ``heard`` from its first sound on.

    eSpeak NG does not synthesize a text twice alike sample for sample, but its contour above
    the quiet parts (floored at 40 dB) is stable: the same text scores 0.92–1.0, a reply that
    differs in a few words ~0.3.
    """
    h, e = envelope(heard), envelope(expected)
    voiced = np.nonzero(h > 30)[0]
    start = int(voiced[0]) if len(voiced) else 0
    h, e = np.maximum(h, 40), np.maximum(e, 40)
    best = -1.0
    for s in range(max(0, start - 5), start + 6):
        if s + len(e) <= len(h):
            best = max(best, float(np.corrcoef(h[s : s + len(e)], e)[0, 1]))
    return best


async def wait_for_reply(record: StreamRecord, after_ms: int, timeout: float) -> None:
    """Wait until the caller heard something after ``after_ms`` and then 1.5 s of nothing."""
    with trio.move_on_after(timeout):
        while True:
            await trio.sleep(0.1)
            if record.first_heard_at(after_ms) is not None and not any(record.played[-75:]):
                return


def logged(log: str, what: str) -> list[str]:
    """The quoted texts of the server's ``heard "…"`` or ``reply "…"`` lines."""
    return re.findall(rf'call \w+: {what} "([^"]*)"', log)


async def test_a_caller_asking_for_a_table_hears_a_spoken_booking_answer(serve) -> None:
    server = serve("pipelines.local:create", log_level="DEBUG")  # transcripts log at DEBUG
    audio = spoken("Hello, I would like to book a table for two people.")
    async with open_inbound_call(server.url, server.auth_token) as call:
        await call.pause(0.5)
        spoke_at = call.record.frames_sent * 20
        await call.say(audio)
        ended_at = spoke_at + speech_end_ms(audio)
        await wait_for_reply(call.record, ended_at, timeout=20)
    record = call.record
    assert record.errors == []
    first = record.first_heard_at(ended_at)
    assert first is not None, "the caller heard no reply"
    print(f"\nend of speech → first reply audio heard: {first - ended_at} ms")
    log = server.log()
    heard, replies = logged(log, "heard"), logged(log, "reply")
    print(f"server heard {heard}, replied {replies}")
    print("\n".join(line for line in log.splitlines() if "after end of turn" in line))
    # The booking was understood ("table" is heard only some of the time: WER ~0.7) …
    assert len(heard) == 1 and "book" in heard[0].split(), log
    assert len(replies) == 1 and "I can book" in replies[0], log
    # … and what the caller heard is that reply: its level contour is the reply's, spoken afresh
    # (eSpeak NG never says a text twice alike sample for sample), and recognized again it
    # carries the answer's words.
    reply_audio = bytes(record.heard[first // 20 * FRAME_BYTES :])
    assert envelope_match(reply_audio, spoken_reply(replies[0])) > 0.8
    heard_reply = await trio.to_thread.run_sync(transcribe, reply_audio)
    print(f"the reply as the caller heard it, recognized: {heard_reply!r}")
    assert {"book", "people", "table", "time"} & set(heard_reply.split()), heard_reply
    assert "Traceback" not in log


# -- in-process: failures and streaming ---------------------------------------------------------


@asynccontextmanager
async def running_server(factory: Callable[[], Stage]) -> AsyncIterator[str]:
    server = VoiceServer(ServerConfig(stage_factory=factory, auth_token=TOKEN, port=0))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        yield url
        server.shutdown()


class BrokenResponder:
    """A responder that fails as soon as it is asked anything."""

    def respond(self, text: str, history: Sequence[tuple[str, str]]) -> Iterator[str]:
        raise RuntimeError("the responder broke")


async def test_a_failing_responder_apologizes_and_hangs_up_while_other_calls_go_on() -> None:
    made: list[LocalAgent] = []

    def factory() -> Stage:
        agent = LocalAgent(BrokenResponder() if not made else RuleResponder())
        made.append(agent)
        return agent

    audio = spoken("Hello, what time is it?")
    records: dict[str, StreamRecord] = {}

    async def caller(name: str, url: str, delay: float) -> None:
        await trio.sleep(delay)
        async with open_inbound_call(url, TOKEN) as call:
            await call.pause(0.3)
            spoke_at = call.record.frames_sent * 20
            await call.say(audio)
            await wait_for_reply(call.record, spoke_at + speech_end_ms(audio), timeout=20)
        records[name] = call.record

    async with running_server(factory) as url, trio.open_nursery() as nursery:
        nursery.start_soon(caller, "broken", url, 0)
        nursery.start_soon(caller, "healthy", url, 1.0)  # answered by the second stage made

    broken, healthy = records["broken"], records["healthy"]
    assert broken.closed_by_server and broken.close_code == 1000, broken
    apology = speak_ulaw(APOLOGY)  # as the agent says it: in one piece
    assert abs(broken.heard_ms() - len(apology) // 8) <= 400, broken.heard_ms()
    assert envelope_match(bytes(broken.heard), apology) > 0.8
    assert not healthy.closed_by_server and healthy.errors == []
    assert healthy.heard_ms() > 1000
    assert envelope_match(bytes(healthy.heard), apology) < 0.8
    assert len(made[1].history) == 1


class SlowSecondPiece(RuleResponder):
    """Yields one sentence, then waits for the test's go before the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.asked = threading.Event()

    def respond(self, text: str, history: Sequence[tuple[str, str]]) -> Iterator[str]:
        self.asked.set()
        yield "This is the first part of my answer."
        self.go.wait(timeout=30)
        yield "And this is the rest of it."


async def test_the_first_piece_of_a_reply_is_heard_before_the_rest_exists() -> None:
    responder = SlowSecondPiece()
    audio = spoken("Could you tell me how much the ticket costs?")
    async with (
        running_server(lambda: LocalAgent(responder)) as url,
        open_inbound_call(url, TOKEN) as call,
    ):
        await call.pause(0.3)
        spoke_at = call.record.frames_sent * 20
        await call.say(audio)
        ended_at = spoke_at + speech_end_ms(audio)
        with trio.fail_after(20):
            while call.record.first_heard_at(ended_at) is None:
                await trio.sleep(0.05)
        assert responder.asked.is_set() and not responder.go.is_set()
        heard_before_rest = call.record.heard_ms()
        responder.go.set()
        await wait_for_reply(call.record, ended_at, timeout=20)
    assert heard_before_rest > 0
    assert call.record.heard_ms() > heard_before_rest + 1000


class BrokenRecognizer(Recognizer):
    """A recognizer whose decoding fails."""

    def feed(self, pcm: np.ndarray) -> str | None:
        raise RuntimeError("the recognizer broke")


async def test_a_failing_recognizer_apologizes_and_hangs_up() -> None:
    audio = spoken("Hello, what time is it?")
    async with (
        running_server(lambda: LocalAgent(recognizer=BrokenRecognizer)) as url,
        open_inbound_call(url, TOKEN) as call,
    ):
        await call.pause(0.3)
        await call.say(audio)
        with trio.fail_after(20):
            await call.closed.wait()
    assert call.record.closed_by_server and call.record.close_code == 1000
    assert call.record.close_reason == "agent-error"
    assert call.record.heard_ms() > 1000


class LongWinded(RuleResponder):
    """First turn: one sentence, then (once let go) a sentence that must never be produced."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.closed = threading.Event()

    def respond(self, text: str, history: Sequence[tuple[str, str]]) -> Iterator[str]:
        if history:
            yield from super().respond(text, history)
            return
        try:
            yield "Let me tell you all about our opening hours, one day at a time."
            self.go.wait(timeout=30)
            yield "This part must never be produced."
        except GeneratorExit:
            self.closed.set()
            raise


async def test_barge_in_stops_the_rest_of_the_reply_and_the_new_turn_is_answered() -> None:
    responder = LongWinded()
    agents: list[LocalAgent] = []

    def factory() -> Stage:
        agents.append(LocalAgent(responder))
        return agents[-1]

    async with running_server(factory) as url, open_inbound_call(url, TOKEN) as call:
        await call.pause(0.3)
        await call.say(spoken("What are your opening hours?"))
        with trio.fail_after(20):
            while call.record.heard_ms() < 600:
                await trio.sleep(0.02)
        await call.say(spoken("Hello, what time is it?"))  # over the reply
        with trio.fail_after(10):
            while not call.record.clears:
                await trio.sleep(0.02)
        responder.go.set()  # the responder may go on now; the agent must not take more
        spoke_at = call.record.frames_sent * 20
        await wait_for_reply(call.record, spoke_at, timeout=20)
    assert responder.closed.is_set()
    history = agents[-1].history
    assert len(history) == 2, history
    assert history[0][1] == "Let me tell you all about our opening hours, one day at a time."
    assert "never" not in " ".join(said for _, said in history)
