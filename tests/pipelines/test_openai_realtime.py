"""The ``openai-realtime`` stage against a fake Realtime server on loopback: no network, no key.

The fake speaks the beta Realtime events the stage uses: it checks the handshake's bearer key,
answers ``session.update`` with ``session.updated``, collects ``input_audio_buffer.append``,
runs a crude energy VAD over that audio (``speech_started`` / ``speech_stopped``), answers the end
of a turn with a response streamed as ``response.audio.delta`` chunks of known μ-law bytes, and
records ``response.cancel`` and ``conversation.item.truncate``. Calls come from the Twilio
emulator into an in-process :class:`~engine.server.VoiceServer`, so what the caller heard is
measured on the emulator's playback clock, not taken from the stage's word.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import trio
import trio_websocket

from conftest import sentences, spoken
from engine.errors import ConfigError
from engine.loader import load_stage_factory
from engine.media.codec import FRAME_BYTES, ulaw_decode
from engine.server import ServerConfig, VoiceServer
from engine.testing import EmulatedStream, StreamRecord, open_inbound_call
from pipelines.openai_realtime import (
    DEFAULT_URL,
    OpenAIRealtime,
    RealtimeConfig,
    create,
)

TOKEN = "test-auth-token"
API_KEY = "sk-test-not-a-real-key"
MODEL = "gpt-test-realtime"
VOICED_RMS = 100.0  # eSpeak's silence decodes to RMS ≈ 2, its speech to hundreds or more
START_FRAMES = 3  # 60 ms of voice starts speech
STOP_FRAMES = 25  # 500 ms of silence ends it (server_vad's default silence_duration_ms)
PREFIX_MS = 300  # server_vad's default prefix_padding_ms


# -- the fake Realtime server -----------------------------------------------------------------


@dataclass
class FakeSession:
    """One connection to the fake: what the client sent, and handles to misbehave."""

    path: str
    headers: dict[str, str]
    ws: trio_websocket.WebSocketConnection
    config: dict[str, Any] = field(default_factory=dict)
    """The merged ``session`` of every ``session.update``."""
    audio: bytearray = field(default_factory=bytearray)
    """Every byte of ``input_audio_buffer.append``, decoded, in order."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """Every client event but the appends, in order."""
    speech_started_ms: list[int] = field(default_factory=list)
    responses: list[tuple[str, str]] = field(default_factory=list)
    """(response_id, item_id) of every response started."""
    streaming: trio.CancelScope | None = None
    streaming_id: str | None = None
    voiced_run: int = 0
    silent_run: int = 0
    speaking: bool = False

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        """The client events of one type."""
        return [e for e in self.events if e["type"] == type_]

    async def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (the model vanishes)."""
        await self.ws._stream.aclose()


class FakeRealtime:
    """A scripted stand-in for ``wss://api.openai.com/v1/realtime`` (beta events).

    ``reply`` is the μ-law every response streams, in ``chunk_ms`` deltas: the first
    ``burst_ms`` at once, the rest at ``speed`` × real time. At most ``max_responses`` responses.
    After ``response.cancel`` it still sends ``cancel_lag_chunks`` deltas, as audio already in
    flight on a real socket would arrive.
    """

    def __init__(
        self,
        reply: bytes,
        *,
        chunk_ms: int = 100,
        burst_ms: int = 500,
        speed: float = 2.0,
        max_responses: int = 1,
        cancel_lag_chunks: int = 0,
        refuse_session: bool = False,
    ) -> None:
        self.reply = reply
        self.chunk_ms = chunk_ms
        self.burst_ms = burst_ms
        self.speed = speed
        self.max_responses = max_responses
        self.cancel_lag_chunks = cancel_lag_chunks
        self.refuse_session = refuse_session
        self.sessions: list[FakeSession] = []
        self.rejected: list[dict[str, str]] = []
        self.url = ""
        self._ids = 0

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_{self._ids:04d}"

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        """Serve one client connection."""
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        if headers.get("authorization") != f"Bearer {API_KEY}":
            self.rejected.append(headers)
            await request.reject(401, body=b'{"error": {"code": "invalid_api_key"}}')
            return
        ws = await request.accept()
        session = FakeSession(path=request.path, headers=headers, ws=ws)
        self.sessions.append(session)
        async with trio.open_nursery() as nursery:
            await self._send(
                session, "session.created", session={"id": self._id("sess"), "tools": []}
            )
            with suppress(trio_websocket.ConnectionClosed):
                while True:
                    event = json.loads(await ws.get_message())
                    await self._on_event(session, event, nursery)
            nursery.cancel_scope.cancel()

    async def _send(self, to: FakeSession, type_: str, **fields: Any) -> None:
        event = {"type": type_, "event_id": self._id("event"), **fields}
        with suppress(trio_websocket.ConnectionClosed):  # the reader sees it and ends the session
            await to.ws.send_message(json.dumps(event))

    async def _on_event(
        self, session: FakeSession, event: dict[str, Any], nursery: trio.Nursery
    ) -> None:
        match event["type"]:
            case "input_audio_buffer.append":
                before = len(session.audio)
                session.audio += base64.b64decode(event["audio"], validate=True)
                await self._vad(session, before, nursery)
                return
            case "session.update":
                if self.refuse_session:
                    await self._send(
                        session,
                        "error",
                        error={
                            "type": "invalid_request_error",
                            "code": "invalid_value",
                            "message": "Invalid value for 'input_audio_format'",
                            "event_id": event.get("event_id"),
                        },
                    )
                else:
                    session.config.update(event["session"])
                    await self._send(session, "session.updated", session=session.config)
                    # Noise a client must shrug off: an event it has no use for, a delta
                    # missing its fields, and a message that is not JSON.
                    await self._send(session, "rate_limits.updated", rate_limits=[])
                    await self._send(session, "response.audio.delta", delta="!!")
                    await session.ws.send_message("not json")
            case "response.cancel":
                if session.streaming is None:
                    await self._send(
                        session,
                        "error",
                        error={
                            "type": "invalid_request_error",
                            "code": "response_cancel_not_active",
                        },
                    )
                else:
                    nursery.start_soon(self._lagging_cancel, session)
            case "conversation.item.truncate":
                await self._send(
                    session,
                    "conversation.item.truncated",
                    item_id=event["item_id"],
                    content_index=event["content_index"],
                    audio_end_ms=event["audio_end_ms"],
                )
        session.events.append(event)

    async def _vad(self, session: FakeSession, before: int, nursery: trio.Nursery) -> None:
        """Energy VAD over the 20 ms frames completed by the last append."""
        for index in range(before // FRAME_BYTES, len(session.audio) // FRAME_BYTES):
            frame = ulaw_decode(
                bytes(session.audio[index * FRAME_BYTES : (index + 1) * FRAME_BYTES])
            )
            voiced = math.sqrt(float(np.mean(frame.astype(np.float64) ** 2))) > VOICED_RMS
            session.voiced_run = session.voiced_run + 1 if voiced else 0
            session.silent_run = 0 if voiced else session.silent_run + 1
            if not session.speaking and session.voiced_run >= START_FRAMES:
                session.speaking = True
                start_ms = max(0, (index - START_FRAMES + 1) * 20 - PREFIX_MS)
                session.speech_started_ms.append(start_ms)
                await self._send(
                    session,
                    "input_audio_buffer.speech_started",
                    audio_start_ms=start_ms,
                    item_id=self._id("item"),
                )
            elif session.speaking and session.silent_run >= STOP_FRAMES:
                session.speaking = False
                await self._send(
                    session,
                    "input_audio_buffer.speech_stopped",
                    audio_end_ms=(index + 1) * 20,
                    item_id=self._id("item"),
                )
                if len(session.responses) < self.max_responses:
                    response_id, item_id = self._id("resp"), self._id("item")
                    session.responses.append((response_id, item_id))
                    session.streaming = trio.CancelScope()
                    session.streaming_id = response_id
                    nursery.start_soon(self._respond, session, response_id, item_id)

    async def _respond(self, session: FakeSession, response_id: str, item_id: str) -> None:
        assert session.streaming is not None
        await self._send(
            session,
            "response.created",
            response={"id": response_id, "object": "realtime.response", "status": "in_progress"},
        )
        await self._send(
            session,
            "response.output_item.added",
            response_id=response_id,
            output_index=0,
            item={"id": item_id, "type": "message", "role": "assistant", "status": "in_progress"},
        )
        chunk = self.chunk_ms * 8
        started = trio.current_time()
        with session.streaming:
            for k, offset in enumerate(range(0, len(self.reply), chunk)):
                due = started + max(0, k * self.chunk_ms - self.burst_ms) / 1000 / self.speed
                await trio.sleep_until(due)
                await self._delta(session, response_id, item_id, offset)
            await self._send(
                session,
                "response.audio.done",
                response_id=response_id,
                item_id=item_id,
                output_index=0,
                content_index=0,
            )
            await self._send(
                session, "response.done", response={"id": response_id, "status": "completed"}
            )
            session.streaming = None

    async def _delta(self, session: FakeSession, response_id: str, item_id: str, at: int) -> None:
        await self._send(
            session,
            "response.audio.delta",
            response_id=response_id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            delta=base64.b64encode(self.reply[at : at + self.chunk_ms * 8]).decode(),
        )

    async def _lagging_cancel(self, session: FakeSession) -> None:
        scope, response_id = session.streaming, session.streaming_id
        assert scope is not None and response_id is not None
        scope.cancel()
        session.streaming = None
        item_id = session.responses[-1][1]
        for _ in range(self.cancel_lag_chunks):  # audio already on the wire
            await self._delta(session, response_id, item_id, 0)
        await self._send(
            session, "response.done", response={"id": response_id, "status": "cancelled"}
        )


@asynccontextmanager
async def realtime_call_server(
    monkeypatch: pytest.MonkeyPatch, fake: FakeRealtime
) -> AsyncIterator[str]:
    """The fake on loopback and a voice server whose calls run ``openai_realtime.create``."""
    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(
            trio_websocket.serve_websocket, fake.handler, "127.0.0.1", 0, None
        )
        fake.url = f"ws://127.0.0.1:{ws_server.port}/v1/realtime"
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        monkeypatch.setenv("OPENAI_REALTIME_URL", fake.url)
        monkeypatch.setenv("OPENAI_REALTIME_MODEL", MODEL)
        server = VoiceServer(ServerConfig(stage_factory=create, auth_token=TOKEN, port=0))
        url = await nursery.start(server.serve)
        yield url
        server.shutdown()
        nursery.cancel_scope.cancel()


async def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Poll ``condition`` until it holds (or fail after ``timeout`` seconds)."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


def assert_forwarded_unchanged(session: FakeSession, record: StreamRecord) -> None:
    """The model got exactly the caller's bytes, in order, all but a short tail in flight."""
    got, mic = bytes(session.audio), bytes(record.mic)
    assert len(got) > 8000
    assert got == mic[: len(got)]
    assert len(mic) - len(got) <= 10 * FRAME_BYTES, (len(mic), len(got))


# -- tests ------------------------------------------------------------------------------------


async def test_audio_flows_both_ways_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    reply = spoken(sentences()[8])
    fake = FakeRealtime(reply)
    async with (
        realtime_call_server(monkeypatch, fake) as url,
        open_inbound_call(url, TOKEN) as call,
    ):
        await call.pause(0.2)
        await call.say(spoken(sentences()[1]))
        await wait_for(lambda: reply in call.record.heard)
        await call.pause(0.3)
    [session] = fake.sessions
    # The handshake and the session: bearer key, beta protocol, μ-law both ways, no tools.
    assert session.headers["authorization"] == f"Bearer {API_KEY}"
    assert session.headers["openai-beta"] == "realtime=v1"
    assert session.path == f"/v1/realtime?model={MODEL}"
    assert session.config["input_audio_format"] == "g711_ulaw"
    assert session.config["output_audio_format"] == "g711_ulaw"
    assert session.config["turn_detection"] == {"type": "server_vad"}
    assert session.config["tools"] == []
    assert session.events[0]["type"] == "session.update"
    # Caller → model: every byte the microphone sent, unchanged.
    assert_forwarded_unchanged(session, call.record)
    # Model → caller: the reply's bytes, unchanged, all of them heard, nothing else sent.
    sent = b"".join(payload for _, payload in call.record.received)
    assert sent == reply
    assert reply in call.record.heard
    # Nobody barged in: nothing cleared, cancelled or truncated.
    assert call.record.clears == []
    assert session.of_type("response.cancel") == []
    assert session.of_type("conversation.item.truncate") == []
    assert call.record.close_code in (None, 1000)


async def test_barge_in_clears_cancels_and_truncates_at_what_was_heard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reply = spoken(" ".join(sentences()[3:6]))  # ~7 s: long enough to talk over
    fake = FakeRealtime(reply, chunk_ms=60, burst_ms=400, speed=1.0, cancel_lag_chunks=3)
    async with (
        realtime_call_server(monkeypatch, fake) as url,
        open_inbound_call(url, TOKEN) as call,
    ):
        await call.pause(0.2)
        await call.say(spoken(sentences()[0]))
        # Wait until a good second of the reply is audible, then talk over it.
        await wait_for(lambda: sum(call.record.played) >= 60)
        await call.say(spoken(sentences()[6])[:8000])
        await call.pause(1.0)
    record = call.record
    [session] = fake.sessions
    [(response_id, item_id)] = session.responses
    assert len(session.speech_started_ms) == 2
    # Playout sent Twilio one clear.
    assert len(record.clears) == 1, record.clears
    clear_time, _ = record.clears[0]
    clear_tick = int((clear_time - record.t0) / 0.020)
    played_ms = 20 * sum(record.played[: clear_tick + 1])
    # The response was still streaming: cancelled, then the item truncated at what was heard.
    cancels = session.of_type("response.cancel")
    truncates = session.of_type("conversation.item.truncate")
    assert [c.get("response_id") for c in cancels] == [response_id]
    assert len(truncates) == 1, truncates
    truncate = truncates[0]
    assert session.events.index(cancels[0]) < session.events.index(truncate)
    assert truncate["item_id"] == item_id
    assert truncate["content_index"] == 0
    assert abs(truncate["audio_end_ms"] - played_ms) <= 60, (truncate, played_ms)
    assert played_ms >= 1000
    # What the caller heard of it was the reply's start, unchanged...
    assert reply[: (played_ms - 60) * 8] in record.heard
    # ...and nothing more of it played after the clear, though deltas were still in flight.
    assert sum(record.played[clear_tick + 2 :]) == 0
    received_after = [p for t, p in record.received if t > clear_time]
    assert received_after == []
    assert_forwarded_unchanged(session, record)


def test_no_api_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        create()
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        load_stage_factory("pipelines.openai_realtime:create")  # fails at start-up, not per call
    monkeypatch.setenv("OPENAI_API_KEY", "")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        create()


def test_configuration_from_environment_with_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_REALTIME_URL", "OPENAI_REALTIME_MODEL", "OPENAI_REALTIME_VOICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    stage = OpenAIRealtime()
    assert stage.config.url == DEFAULT_URL
    assert stage.config.endpoint() == f"{DEFAULT_URL}?model=gpt-4o-realtime-preview"
    assert (b"Authorization", b"Bearer sk-env") in stage.config.headers()
    assert (b"OpenAI-Beta", b"realtime=v1") in stage.config.headers()
    assert (stage.receives_audio, stage.turn_detection, stage.barge_in) == (True, False, False)
    monkeypatch.setenv("OPENAI_REALTIME_URL", "wss://proxy.example/realtime?tenant=a")
    monkeypatch.setenv("OPENAI_REALTIME_MODEL", "gpt-env")
    stage = OpenAIRealtime(api_key="sk-arg", voice="verse", instructions="Be brief.")
    assert stage.config.endpoint() == "wss://proxy.example/realtime?tenant=a&model=gpt-env"
    assert stage.config.api_key == "sk-arg"
    session = stage.config.session()
    assert (session["voice"], session["instructions"], session["tools"]) == (
        "verse",
        "Be brief.",
        [],
    )
    assert OpenAIRealtime(model="gpt-arg").config.endpoint().endswith("model=gpt-arg")
    with pytest.raises(ConfigError, match="ws:// or wss://"):
        RealtimeConfig.from_env(url="https://api.openai.com/v1/realtime")


async def test_dropped_model_socket_ends_its_call_cleanly_and_spares_the_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reply = spoken(sentences()[9])
    fake = FakeRealtime(reply)
    calls: dict[str, EmulatedStream] = {}

    async def doomed_call(url: str) -> None:
        # Its own task: the emulator ends a call's block when the server closes the call.
        async with open_inbound_call(url, TOKEN) as call:
            calls["doomed"] = call
            await call.pause(10)

    async with realtime_call_server(monkeypatch, fake) as url, trio.open_nursery() as nursery:
        nursery.start_soon(doomed_call, url)
        await wait_for(lambda: len(fake.sessions) == 1 and len(fake.sessions[0].audio) > 0)
        async with open_inbound_call(url, TOKEN) as healthy:
            await wait_for(lambda: len(fake.sessions) == 2)
            await healthy.pause(0.3)
            await fake.sessions[0].abort()
            with trio.fail_after(3):
                await calls["doomed"].closed.wait()
            # The other call still streams both ways: it speaks, and hears the reply.
            before = len(fake.sessions[1].audio)
            await healthy.say(spoken(sentences()[2]))
            await wait_for(lambda: reply in healthy.record.heard)
            assert len(fake.sessions[1].audio) > before + 16000
    doomed = calls["doomed"]
    assert doomed.record.closed_by_server
    assert doomed.record.close_code == 1000
    assert not healthy.record.closed_by_server
    assert healthy.record.close_code in (None, 1000)
    assert_forwarded_unchanged(fake.sessions[1], healthy.record)


@pytest.mark.parametrize("failure", ["rejected key", "refused session"])
async def test_a_model_that_refuses_the_call_ends_it_cleanly(
    monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    fake = FakeRealtime(b"", refuse_session=failure == "refused session")
    async with realtime_call_server(monkeypatch, fake) as url:
        if failure == "rejected key":
            monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        async with open_inbound_call(url, TOKEN) as call:
            with trio.fail_after(3):
                await call.closed.wait()
    assert call.record.closed_by_server
    assert call.record.close_code == 1000
    if failure == "rejected key":
        assert fake.rejected and not fake.sessions
    else:
        assert len(fake.sessions) == 1
