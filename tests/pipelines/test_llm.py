"""The ``llm`` stage against a fake chat-completions server on loopback: no network, no model.

The fake speaks OpenAI's streaming format over plain HTTP/1.1 (raw trio, chunked
``text/event-stream``): a role chunk, one ``chat.completion.chunk`` per word every
``word_delay`` seconds, a final chunk with ``finish_reason: "stop"``, then ``data: [DONE]``. It
records every request (path, headers, JSON body) and when it finished streaming — or when the
client went away mid-stream. Its path picks a behaviour: ``/v1/…`` answers, ``/fail500/v1/…``
answers HTTP 500, ``/cut/v1/…`` closes the connection after a few words. Calls come from the
Twilio emulator into an in-process :class:`~engine.server.VoiceServer` (same trio clock as the
fake), so what the caller heard is measured on the emulator's playback clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pytest
import trio

from conftest import ROOT, spoken
from engine.errors import ConfigError
from engine.loader import load_stage_factory
from engine.media.codec import FRAME_BYTES, ulaw_decode
from engine.media.stage import Stage
from engine.server import ServerConfig, VoiceServer
from engine.testing import StreamRecord, open_inbound_call
from pipelines.llm import (
    APOLOGY,
    CUT_MARKER,
    DEFAULT_SYSTEM_PROMPT,
    LLMAgent,
    LLMConfig,
    SentenceSplitter,
    Spoken,
    create,
    heard_text,
    speak_sentence,
    split_sentences,
)

TOKEN = "test-auth-token"
MODEL = "fake-model-7b"
API_KEY = "sk-test-not-a-real-key"
WORD_DELAY = 0.15

ANSWER = (
    "Sure, I can help you with that. Our office is open from nine in the morning until six "
    "in the evening. Is there anything else you would like to know?"
)
LONG_ANSWER = (
    "Sure, I can help you with that. The first thing to know is that our office opens at nine "
    "in the morning. The second thing is that parking is free for all visitors on weekends. "
    "The third thing is that we close at six in the evening. Finally, please remember to bring "
    "your booking number with you."
)
SHORT_ANSWER = "Of course, I will stop there."


# -- the fake chat-completions server ----------------------------------------------------------


@dataclass
class FakeRequest:
    """One request to the fake and what became of its answer (trio times)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float
    finished_at: float | None = None
    """When ``[DONE]`` and the last chunk were written."""
    aborted_at: float | None = None
    """When a write failed because the client had gone away."""
    cut_at: float | None = None
    """When the fake closed the connection mid-stream on purpose (``/cut``)."""

    @property
    def messages(self) -> list[dict[str, str]]:
        return list(self.body["messages"])


@dataclass
class FakeLLM:
    """A chat-completions server answering ``answers[i]`` to its i-th request (the last one
    again once they run out), a word at a time."""

    answers: Sequence[str]
    word_delay: float = WORD_DELAY
    cut_after_words: int = 10
    requests: list[FakeRequest] = field(default_factory=list)
    port: int = 0

    def url(self, behaviour: str = "") -> str:
        prefix = f"/{behaviour}" if behaviour else ""
        return f"http://127.0.0.1:{self.port}{prefix}/v1"

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            await self._handle(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    async def _handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        _method, path, _version = request_line.split(" ")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        while len(body) < int(headers.get("content-length", "0")):
            body += await stream.receive_some(65536)
        request = FakeRequest(path, headers, json.loads(body), trio.current_time())
        answer = self.answers[min(len(self.requests), len(self.answers) - 1)]
        self.requests.append(request)
        if path.startswith("/fail500/"):
            error = json.dumps({"error": {"message": "model crashed", "type": "server_error"}})
            await stream.send_all(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(error), error.encode())
            )
            return
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        try:
            await self._stream(stream, request, answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            request.aborted_at = trio.current_time()

    async def _stream(self, stream: trio.SocketStream, request: FakeRequest, answer: str) -> None:
        def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": request.body.get("model"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        async def event(data: str) -> None:
            payload = f"data: {data}\n\n".encode()
            await stream.send_all(b"%x\r\n%s\r\n" % (len(payload), payload))

        await event(json.dumps(chunk({"role": "assistant", "content": ""})))
        words = answer.split(" ")
        for i, word in enumerate(words):
            if request.path.startswith("/cut/") and i == self.cut_after_words:
                request.cut_at = trio.current_time()
                await stream.aclose()  # no [DONE], no last chunk: the stream breaks
                return
            await trio.sleep(self.word_delay)
            await event(json.dumps(chunk({"content": word if i == 0 else " " + word})))
        await event(json.dumps(chunk({}, "stop")))
        await event("[DONE]")
        await stream.send_all(b"0\r\n\r\n")
        request.finished_at = trio.current_time()


@asynccontextmanager
async def running(
    fake: FakeLLM, factory: Callable[[], Stage]
) -> AsyncIterator[tuple[FakeLLM, str]]:
    """The fake LLM and an in-process voice server with ``factory``'s stages."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, fake.handle, 0, host="127.0.0.1"))
        fake.port = listeners[0].socket.getsockname()[1]
        server = VoiceServer(ServerConfig(stage_factory=factory, auth_token=TOKEN, port=0))
        url = await nursery.start(server.serve)
        yield fake, url
        server.shutdown()
        nursery.cancel_scope.cancel()


@pytest.fixture
def llm_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeLLM], None]:
    """Point ``LLM_*`` at a fake (once its port is known)."""
    monkeypatch.delenv("LLM_SYSTEM_PROMPT", raising=False)
    monkeypatch.setenv("LLM_MODEL", MODEL)
    monkeypatch.setenv("LLM_API_KEY", API_KEY)

    def point(fake: FakeLLM) -> None:
        monkeypatch.setenv("LLM_BASE_URL", fake.url())

    return point


def agents_made() -> tuple[list[LLMAgent], Callable[[], Stage]]:
    made: list[LLMAgent] = []

    def factory() -> Stage:
        agent = create()
        assert isinstance(agent, LLMAgent)
        made.append(agent)
        return agent

    return made, factory


# -- helpers -------------------------------------------------------------------------------


def speech_end_ms(audio: bytes) -> int:
    """Where the last non-silent 20 ms frame of μ-law ``audio`` ends."""
    frames = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    voiced = [i for i, frame in enumerate(frames) if frame.strip(b"\xff\x7f")]
    return (voiced[-1] + 1) * 20


def first_played_tick(record: StreamRecord, after_ms: int) -> int | None:
    return next((i for i in range(after_ms // 20, len(record.played)) if record.played[i]), None)


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


def durations(text: str) -> list[Spoken]:
    """``text`` as the agent speaks it: its sentences and their audio lengths."""
    return [Spoken(s, len(speak_sentence(s)) / 8) for s in split_sentences(text)]


def correlation(heard: bytes, expected: np.ndarray) -> float:
    """Peak normalized cross-correlation of ``expected`` (8 kHz) within ``heard`` (μ-law)."""
    signal = ulaw_decode(heard).astype(np.float64)
    template = expected.astype(np.float64)
    if len(signal) < len(template):
        return 0.0
    scores = np.correlate(signal, template, mode="valid")
    energy = np.sqrt(np.convolve(signal**2, np.ones(len(template)), mode="valid"))
    return float(np.max(scores / (energy * np.linalg.norm(template) + 1e-9)))


# -- whole calls -------------------------------------------------------------------------------


async def test_the_first_sentence_is_heard_before_the_model_finishes_streaming(
    llm_env: Callable[[FakeLLM], None],
) -> None:
    made, factory = agents_made()
    audio = spoken("Hello, I would like to book a table for two people.")
    async with running(FakeLLM([ANSWER]), factory) as (fake, url):
        llm_env(fake)
        async with open_inbound_call(url, TOKEN) as call:
            await call.pause(0.3)
            spoke_at = call.record.frames_sent * 20
            await call.say(audio)
            ended_at = spoke_at + speech_end_ms(audio)
            await wait_until(lambda: bool(fake.requests and fake.requests[0].finished_at), 20)
            await call.pause(0.3)  # the last sentence's synthesis
    record = call.record
    assert record.errors == [] and not record.closed_by_server
    [request] = fake.requests
    assert request.finished_at is not None and request.aborted_at is None
    tick = first_played_tick(record, ended_at)
    assert tick is not None, "the caller heard no reply"
    first_audio = record.t0 + tick * 0.020
    ahead = request.finished_at - first_audio
    print(
        f"\nrequest {(request.received_at - record.t0) * 1000 - ended_at:.0f} ms after end of "
        f"speech; first reply audio played {(first_audio - request.received_at) * 1000:.0f} ms "
        f"after the request, {ahead * 1000:.0f} ms before the fake finished streaming "
        f"({(request.finished_at - request.received_at) * 1000:.0f} ms)"
    )
    assert ahead > 1.5
    # The request: the bearer key, the model, streaming, the system prompt and the user's turn.
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == MODEL and request.body["stream"] is True
    [agent] = made
    user = agent.history[0]
    assert user["role"] == "user" and user["content"].strip()
    assert request.messages == [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, user]
    # Everything was spoken, so the whole answer is the assistant's turn.
    assert agent.history == [user, {"role": "assistant", "content": ANSWER}]


async def test_after_a_barge_in_the_next_request_holds_only_what_was_heard(
    llm_env: Callable[[FakeLLM], None],
) -> None:
    made, factory = agents_made()
    table = durations(LONG_ANSWER)
    first = spoken("I would like to book a table for two people.")
    second = spoken("What time does the pharmacy close on Sundays?")
    barge_in_after_ms = table[0].duration_ms + 1000  # a second into the second sentence
    async with running(FakeLLM([LONG_ANSWER, SHORT_ANSWER]), factory) as (fake, url):
        llm_env(fake)
        async with open_inbound_call(url, TOKEN) as call:
            await call.pause(0.3)
            spoke_at = call.record.frames_sent * 20
            await call.say(first)
            ended_at = spoke_at + speech_end_ms(first)
            await wait_until(lambda: first_played_tick(call.record, ended_at) is not None, 15)
            reply_tick = first_played_tick(call.record, ended_at)
            assert reply_tick is not None
            await wait_until(
                lambda: 20 * sum(call.record.played[reply_tick:]) >= barge_in_after_ms, 15
            )
            await call.say(second)
            await wait_until(lambda: len(fake.requests) == 2, 15)
            await call.pause(0.5)
    record = call.record
    assert record.errors == []
    first_request, second_request = fake.requests
    # The first stream was abandoned when the caller barged in.
    assert first_request.finished_at is None and first_request.aborted_at is not None
    # What the caller heard of reply-1, by the emulator's playback clock.
    assert record.clears, "no barge-in"
    clear_tick = int((record.clears[0][0] - record.t0) / 0.020)
    heard_ms = 20 * sum(record.played[reply_tick : clear_tick + 1])
    # The second request: system, user, the heard part of the answer, user.
    messages = second_request.messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"], messages
    said = messages[2]["content"]
    print(f"\ncaller heard {heard_ms} ms of reply-1; the model is told it said {said!r}")
    assert said.endswith(CUT_MARKER)
    kept = said.removesuffix(CUT_MARKER).rstrip()
    assert LONG_ANSWER.startswith(kept)
    assert table[0].text in kept and table[-1].text not in kept
    # …and as much of it as the heard milliseconds cover (give or take 150 ms of audio).
    shortest = heard_text(table, heard_ms - 150).removesuffix(CUT_MARKER).rstrip()
    longest = heard_text(table, heard_ms + 150).removesuffix(CUT_MARKER).rstrip()
    assert len(shortest) <= len(kept) <= len(longest), (shortest, kept, longest)
    # The agent's own history agrees, and goes on with the second turn.
    [agent] = made
    assert agent.history[:3] == messages[1:]


async def test_a_failing_model_ends_only_its_own_call_with_an_apology(
    llm_env: Callable[[FakeLLM], None],
) -> None:
    behaviours = ["fail500", "cut", ""]
    made: list[LLMAgent] = []
    fake = FakeLLM([ANSWER])

    def factory() -> Stage:
        agent = LLMAgent(base_url=fake.url(behaviours[len(made)]))
        made.append(agent)
        return agent

    audio = spoken("Hello, I would like to book a table for two people.")
    records: dict[str, StreamRecord] = {}

    async def caller(behaviour: str, url: str) -> None:
        async with open_inbound_call(url, TOKEN) as call:
            records[behaviour] = call.record
            await call.pause(0.3)
            await call.say(audio)
            if behaviour:
                with trio.fail_after(20):
                    await call.closed.wait()
            else:
                await wait_until(lambda: bool((r := request("/v1/")) and r.finished_at), 20)
                await call.pause(1.0)

    def request(prefix: str) -> FakeRequest | None:
        return next((r for r in fake.requests if r.path.startswith(prefix)), None)

    def stage_made_for(behaviour: str) -> bool:
        return len(made) > behaviours.index(behaviour)

    async with running(fake, factory) as (_fake, url), trio.open_nursery() as nursery:
        llm_env(fake)
        for behaviour in behaviours:  # one by one, so each caller's stage is its own
            nursery.start_soon(caller, behaviour, url)
            await wait_until(partial(stage_made_for, behaviour), 10)

    assert len(fake.requests) == 3
    cut, healthy = request("/cut/"), request("/v1/")
    assert request("/fail500/") is not None and cut is not None and healthy is not None
    apology = speak_sentence(APOLOGY)
    middle = apology[len(apology) // 4 : len(apology) // 2]
    for behaviour in ("fail500", "cut"):
        record = records[behaviour]
        assert record.closed_by_server and record.close_code == 1000, (behaviour, record)
        assert record.errors == []
        # eSpeak varies from run to run: heard 0.60–0.90 (measured), not heard 0.34–0.37.
        assert correlation(bytes(record.heard), middle) > 0.5, behaviour
    # HTTP 500: the apology is all the caller heard.
    assert abs(records["fail500"].heard_ms() - len(apology) // 8) <= 400
    # Cut mid-stream: the first sentence, then the apology (and nothing of the rest). eSpeak's
    # output varies a little with what it spoke before, so durations, not waveforms, say so.
    first_sentence = speak_sentence(split_sentences(ANSWER)[0])
    assert abs(records["cut"].heard_ms() - (len(first_sentence) + len(apology)) // 8) <= 400
    # Meanwhile the healthy call went on streaming and speaking.
    assert cut.cut_at is not None and healthy.finished_at is not None
    assert healthy.received_at < cut.cut_at < healthy.finished_at
    record = records[""]
    assert not record.closed_by_server and record.errors == []
    assert record.heard_ms() > 3000
    assert correlation(bytes(record.heard), middle) < 0.5
    assert made[2].history[-1] == {"role": "assistant", "content": ANSWER}


# -- configuration ---------------------------------------------------------------------------


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLM_BASE_URL", "LLM_MODEL", "LLM_API_KEY", "LLM_SYSTEM_PROMPT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="LLM_BASE_URL"):
        create()
    with pytest.raises(ConfigError, match="LLM_BASE_URL"):
        load_stage_factory("pipelines.llm:create")  # the server refuses to start
    monkeypatch.setenv("LLM_BASE_URL", "http://localhost:11434/v1")
    with pytest.raises(ConfigError, match="LLM_MODEL"):
        create()
    monkeypatch.setenv("LLM_MODEL", "llama3.2")
    assert isinstance(create(), LLMAgent)
    with pytest.raises(ConfigError, match="http"):
        LLMAgent(base_url="localhost:11434/v1")
    with pytest.raises(ConfigError, match="read_timeout"):
        LLMAgent(read_timeout=0)


def test_serve_without_configuration_exits_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--insecure",
            "--pipeline",
            "pipelines.llm:create",
        ],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert "LLM_BASE_URL" in result.stderr, result.stderr


def test_environment_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_BASE_URL", "http://env-host:8000/v1/")
    monkeypatch.setenv("LLM_MODEL", "env-model")
    monkeypatch.delenv("LLM_API_KEY", raising=False)
    monkeypatch.setenv("LLM_SYSTEM_PROMPT", "Be brief.")
    config = LLMConfig.from_env()
    assert config.endpoint == "http://env-host:8000/v1/chat/completions"
    assert (config.model, config.api_key, config.system_prompt) == ("env-model", None, "Be brief.")
    assert "Authorization" not in config.headers()
    agent = LLMAgent(
        base_url="https://other/v1/chat/completions",
        model="arg-model",
        api_key="sk-arg",
        system_prompt="Be kind.",
        read_timeout=3.0,
        options={"temperature": 0.2},
    )
    config = agent.config
    assert config.endpoint == "https://other/v1/chat/completions"
    assert config.headers()["Authorization"] == "Bearer sk-arg"
    assert config.read_timeout == 3.0
    body = config.body([{"role": "user", "content": "hi"}])
    assert body == {
        "temperature": 0.2,
        "model": "arg-model",
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "hi"},
        ],
        "stream": True,
    }


def test_request_history_drops_empty_turns_and_keeps_roles_alternating() -> None:
    agent = LLMAgent(base_url="http://h/v1", model="m", max_history=4)
    agent.history = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": ""},  # cut before anything was said
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "second answer…"},
        {"role": "user", "content": "four"},
    ]
    assert agent.request_messages() == [
        {"role": "user", "content": "two three"},
        {"role": "assistant", "content": "second answer…"},
        {"role": "user", "content": "four"},
    ]


# -- sentences and heard text --------------------------------------------------------------------

SPLITS = [
    ("Hello there. How are you?", ["Hello there.", "How are you?"]),
    ("It costs 3.5 dollars. That is all.", ["It costs 3.5 dollars.", "That is all."]),
    ("Dr. Smith will see you. Mrs. Jones too.", ["Dr. Smith will see you.", "Mrs. Jones too."]),
    ("We open at 9 a.m. sharp, e.g. tomorrow.", ["We open at 9 a.m. sharp, e.g. tomorrow."]),
    ("Wow! Really?! Yes; indeed.", ["Wow!", "Really?!", "Yes;", "indeed."]),
    ("Well... I think so.", ["Well...", "I think so."]),
    ("First line\nSecond line", ["First line", "Second line"]),
    ("Para one.\n\n\nPara two.", ["Para one.", "Para two."]),
    ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("Visit example.com today. Bye.", ["Visit example.com today.", "Bye."]),
    (
        "J. R. R. Tolkien wrote it. So did I. Fine.",
        ["J. R. R. Tolkien wrote it.", "So did I.", "Fine."],
    ),
    ("1. Open the app.\n2. Tap settings.", ["1. Open the app.", "2. Tap settings."]),
    ("No. That is not possible.", ["No.", "That is not possible."]),
    ("Version 2.0 is out", ["Version 2.0 is out"]),
    ("**Sure!** Here it is.", ["**Sure!**", "Here it is."]),
    ("你好。再见！", ["你好。", "再见！"]),
    ("Done. ...", ["Done."]),
    ("Hi. ... there.", ["Hi.", "... there."]),
    ("...", []),
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), SPLITS)
def test_sentence_splitter(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected
    for size in (1, 2, 3, 7):  # streamed in pieces of any size, the cuts are the same
        splitter = SentenceSplitter()
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        assert [s for piece in pieces for s in splitter.feed(piece)] + splitter.flush() == expected


def test_sentence_splitter_emits_a_sentence_once_the_next_character_decides() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Sure, I can help.") == []  # "." then "5" would be a decimal
    assert splitter.feed(" Our") == ["Sure, I can help."]
    assert splitter.feed(" price is 3.") == []
    assert splitter.feed("5 euros") == []
    assert splitter.flush() == ["Our price is 3.5 euros"]


def test_sentence_splitter_forces_a_cut_in_a_very_long_sentence() -> None:
    text = "word " * 30 + "and then, " + "more " * 40
    sentences = SentenceSplitter(max_chars=200).feed(text)
    assert sentences and sentences[0].endswith("and then,")


TABLE = [Spoken("Hello there.", 1000), Spoken("How are you today?", 1500)]
HEARD = [
    (0, "…"),
    (200, "…"),  # 20 % of the characters: not yet half of "Hello"
    (300, "Hello…"),
    (999, "Hello there. …"),  # every word heard; only the trailing silence was cut
    (1000, "Hello there. …"),
    (1250, "Hello there. How…"),
    (1750, "Hello there. How are…"),
    (2300, "Hello there. How are you today?"),
    (2490, "Hello there. How are you today?"),  # within a frame of the end
    (2500, "Hello there. How are you today?"),
    (9999, "Hello there. How are you today?"),
]


@pytest.mark.parametrize(("heard_ms", "expected"), HEARD)
def test_heard_text(heard_ms: int, expected: str) -> None:
    assert heard_text(TABLE, heard_ms) == expected


def test_heard_text_edge_cases() -> None:
    assert heard_text([], 0) == ""
    commas = [Spoken("Well, maybe, perhaps not.", 1000)]
    assert heard_text(commas, 300) == "Well…"  # the comma of a cut clause goes
    assert heard_text(commas, 600) == "Well, maybe…"
