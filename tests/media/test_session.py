"""Call sessions in an in-process server over real loopback sockets: isolation and teardown."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
import trio
import trio_websocket
from prometheus_client import REGISTRY

from conftest import sentences, spoken
from engine.control.signature import compute_signature
from engine.media.frames import Audio, Dtmf
from engine.media.session import SessionConfig
from engine.media.stage import CallContext, Stage
from engine.server import ServerConfig, VoiceServer
from engine.testing import StreamRecord, open_inbound_call
from engine.testing.twilio_side import inbound_media_message
from pipelines.echo import Echo

TOKEN = "test-auth-token"
SESSION_TASKS = ("_read", "_run_stage", "Playout.run", "_watchdog")


class FragileEcho(Echo):
    """Echo that fails when the caller presses 9."""

    async def run(self, call: CallContext) -> None:
        async for frame in call:
            match frame:
                case Dtmf(digit="9"):
                    raise RuntimeError("the stage broke")
                case Audio():
                    await self.on_audio(call, frame)


MEDIA_PORT: int | None = None


@pytest.fixture(autouse=True, params=[None, 0], ids=["one-port", "media-port"])
def media_path(request: pytest.FixtureRequest) -> Iterator[None]:
    """Run every test with media on the server's one port, and on a port of its own."""
    global MEDIA_PORT
    MEDIA_PORT = request.param
    yield
    MEDIA_PORT = None


@asynccontextmanager
async def running_server(
    factory: Callable[[], Stage] = Echo, **session: float
) -> AsyncIterator[tuple[VoiceServer, str]]:
    config = ServerConfig(
        stage_factory=factory,
        auth_token=TOKEN,
        port=0,
        media_port=MEDIA_PORT,
        session=replace(SessionConfig(), **session),
    )
    server = VoiceServer(config)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        yield server, url
        server.shutdown()


def session_tasks() -> list[str]:
    found: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        if any(task.name.endswith(name) for name in SESSION_TASKS):
            found.append(task.name)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return found


def assert_echoed_everything(record: StreamRecord) -> None:
    echoed = b"".join(payload for _, payload in record.received)
    assert len(echoed) > 0
    assert echoed == record.mic[: len(echoed)]
    assert len(record.mic) - len(echoed) <= 5 * 160


async def test_killing_the_callers_socket_ends_every_task_of_the_call() -> None:
    async with running_server() as (server, url):
        async with open_inbound_call(url, TOKEN) as call:
            await call.say(spoken(sentences()[0])[:16000])
            assert len(server.sessions) == 1
            assert sorted(session_tasks()) == sorted(
                n for n in session_tasks() if n.endswith(SESSION_TASKS)
            )
            assert len(session_tasks()) == 4
            aborted_at = trio.current_time()
            await call.abort()  # the emulator's block ends with its socket: wait outside it
        with trio.fail_after(1):
            while server.sessions or session_tasks():
                await trio.sleep(0.01)
        assert trio.current_time() - aborted_at < 1
        assert call.closed.is_set()
        assert session_tasks() == []


async def test_a_failing_stage_ends_only_its_own_call() -> None:
    audio = spoken(sentences()[1])
    records: list[StreamRecord] = []
    async with running_server(FragileEcho) as (_server, url):

        async def healthy() -> None:
            async with open_inbound_call(url, TOKEN) as call:
                await call.say(audio)
            records.append(call.record)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(healthy)
            async with open_inbound_call(url, TOKEN) as doomed:
                await doomed.pause(0.3)
                await doomed.dtmf("9")
                with trio.fail_after(2):
                    await doomed.closed.wait()
    assert doomed.record.close_code == 1011
    assert len(records) == 5
    for record in records:
        assert record.close_code is None or record.close_code == 1000
        assert_echoed_everything(record)


class HungStage(Echo):
    """A stage that stops taking frames (a model call that never returns)."""

    inline_audio = False  # its audio queues for run(), which never takes it

    async def run(self, call: CallContext) -> None:
        await trio.sleep_forever()


async def test_a_hung_stage_ends_only_its_own_call() -> None:
    audio = spoken(sentences()[1])
    records: list[StreamRecord] = []
    hung_calls: list[str] = []
    outcome: list[int | None] = []

    hung_made = trio.Event()

    def factory() -> Stage:
        if len(hung_calls) < 1:
            hung_calls.append("x")
            hung_made.set()
            return HungStage()
        return Echo()

    async with running_server(factory, stage_stall_timeout=1.0) as (_server, url):

        async def healthy() -> None:
            async with open_inbound_call(url, TOKEN) as call:
                await call.say(audio)
            records.append(call.record)

        async def hang() -> None:
            async with open_inbound_call(url, TOKEN) as hung:
                with trio.fail_after(5):
                    await hung.closed.wait()
            outcome.append(hung.record.close_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hang)
            # The hung call gets the first stage (its webhook may wait for the server's start-up
            # calibration: a fixed sleep could let the healthy calls' stages be made first).
            await hung_made.wait()
            for _ in range(5):
                nursery.start_soon(healthy)
    assert outcome == [1011]
    assert len(records) == 5
    for record in records:
        assert_echoed_everything(record)


async def test_malformed_input_closes_with_its_code_and_spares_the_others() -> None:
    cases = {
        "not json": 1007,
        b"\x00binary": 1003,
        '{"event":"media","sequenceNumber":"9999","streamSid":"MZ00"}': 1008,
        '{"event":"media","sequenceNumber":1}': 1007,
        "x" * 70_000: 1009,
    }
    audio = spoken(sentences()[2])
    outcomes: dict[str | bytes, int | None] = {}
    healthy: list[StreamRecord] = []
    async with running_server() as (_server, url):

        async def good() -> None:
            async with open_inbound_call(url, TOKEN) as call:
                await call.say(audio)
            healthy.append(call.record)

        async def bad(message: str | bytes) -> None:
            async with open_inbound_call(url, TOKEN) as call:
                await call.pause(0.2)
                await call.send_raw(message)
                with trio.fail_after(2):
                    await call.closed.wait()
            outcomes[message] = call.record.close_code

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(good)
            for message in cases:
                nursery.start_soon(bad, message)
    assert outcomes == cases
    assert len(healthy) == 3
    for record in healthy:
        assert_echoed_everything(record)


async def test_unknown_events_are_ignored_and_the_call_goes_on() -> None:
    async with running_server() as (_server, url):
        async with open_inbound_call(url, TOKEN) as call:
            await call.pause(0.2)
            await call.send_numbered(
                lambda seq: json.dumps(
                    {"event": "newthing", "sequenceNumber": str(seq), "streamSid": call.stream_sid}
                )
            )
            await call.say(spoken(sentences()[3])[:8000])
            await call.pause(0.3)
        assert not call.record.closed_by_server
        assert_echoed_everything(call.record)


async def test_a_stream_that_never_starts_is_closed() -> None:
    async with running_server(start_timeout=0.3) as (server, _url):
        ws_url = server.media_url
        headers = [("X-Twilio-Signature", compute_signature(ws_url, {}, TOKEN))]
        async with trio_websocket.open_websocket_url(ws_url, extra_headers=headers) as ws:
            with trio.fail_after(2):
                try:
                    await ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    assert exc.reason.code == 1008
                else:
                    raise AssertionError("server sent something before start")
        with trio.fail_after(1):  # the closing handshake may still be finishing
            while server.sessions:
                await trio.sleep(0.01)


async def test_shutdown_ends_calls_with_going_away() -> None:
    async with running_server() as (server, url), open_inbound_call(url, TOKEN) as call:
        await call.pause(0.3)
        server.shutdown()
        with trio.fail_after(3):
            await call.closed.wait()
    assert call.record.close_code == 1001


async def test_a_stream_that_goes_silent_is_ended(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    async with running_server(silence_timeout=1.0) as (server, url):
        async with open_inbound_call(url, TOKEN) as call:
            await call.pause(0.3)
            call.go_silent()  # TCP stays open; Twilio would never be quiet this long
            silent_at = trio.current_time()
            with trio.fail_after(3):
                await call.closed.wait()
        assert 0.9 < trio.current_time() - silent_at < 2.5
        assert call.record.close_code == 1001
        with trio.fail_after(2):
            while server.sessions:
                await trio.sleep(0.01)
    assert "ended: peer-silent" in caplog.text


async def test_sequence_numbers_out_of_order_are_counted_and_the_audio_still_flows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    audio = spoken(sentences()[4])[:3200]
    frames = [audio[i : i + 160] for i in range(0, len(audio), 160)]
    before = REGISTRY.get_sample_value("voice_engine_sequence_anomalies_total") or 0.0
    async with running_server() as (_server, url):
        async with open_inbound_call(url, TOKEN) as call:
            await call.pause(0.2)
            for k, frame in enumerate(frames):
                # Every frame claims sequence number 2: repeated, then far behind the mic's.
                await call.send_raw(
                    inbound_media_message(2, call.stream_sid, 10_000 + k, 60_000 + 20 * k, frame)
                )
            await call.pause(0.3)
        assert not call.record.closed_by_server
        echoed = [payload for _, payload in call.record.received]
        assert all(frame in echoed for frame in frames)  # every one of them came back
    after = REGISTRY.get_sample_value("voice_engine_sequence_anomalies_total") or 0.0
    assert after - before >= len(frames)
    summaries = [r for r in caplog.records if "out of order" in r.getMessage()]
    assert len(summaries) == 1, summaries  # one line for the call, not one per message


async def test_an_oversized_message_is_logged_as_what_it_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    async with running_server() as (_server, url), open_inbound_call(url, TOKEN) as call:
        await call.pause(0.2)
        await call.send_raw("x" * 70_000)
        with trio.fail_after(2):
            await call.closed.wait()
    assert call.record.close_code == 1009
    assert "ended: protocol-error, message over 65536 bytes (close 1009)" in caplog.text
