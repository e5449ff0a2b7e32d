"""Faults of one call, each survived by healthy echo calls running beside it (issue #6, item 2).

Each test runs an in-process server over real loopback sockets, starts one faulty call and at
least three healthy ``echo`` calls that speak all through the fault, and checks that

- the healthy calls lost no frame: every frame the caller sent was parsed (no sequence gap, no
  drop) and came back byte-exact and in order (:func:`assert_lost_no_frame`);
- no task of the faulty call outlives it (:func:`tasks_of` walks trio's task tree).

Covered here: a stage producing audio faster than real time, a caller that stops reading, and a
socket dropped mid-utterance. A stage that raises or hangs, and malformed input, are in
``test_session.py``.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from conftest import SPEC_PATH, sentences, spoken
from engine.control.calls import make_call
from engine.control.rest import Credentials, TwilioClient
from engine.control.signature import compute_signature
from engine.errors import TwilioAPIError
from engine.media.codec import FRAME_BYTES
from engine.media.frames import Audio, Frame
from engine.media.playout import PlayoutConfig
from engine.media.session import CallEnd, CallOutcome, CallSession, SessionConfig
from engine.media.stage import CallContext, Stage
from engine.server import ServerConfig, VoiceServer
from engine.testing import (
    CalleeBehaviour,
    RecordedRequest,
    StreamRecord,
    TwilioEmulator,
    new_sid,
    open_inbound_call,
    open_twilio_emulator,
    ring,
    twilio_side,
)
from engine.testing.twilio_api import CallbackOrder, Outcome
from pipelines.echo import Echo
from pipelines.turn_echo import TurnEcho

TOKEN = "test-auth-token"
HEALTHY_CALLS = 3
TONE = bytes(range(0x10, 0x10 + FRAME_BYTES))  # one non-silent 20 ms μ-law frame
MEDIA_PATHS = pytest.mark.parametrize("media_port", [None, 0], ids=["one-port", "media-port"])


# -- the server, its calls and their tasks --------------------------------------------------------


@dataclass
class Harness:
    """A running server whose next stages are chosen by the test, and every session it ran."""

    server: VoiceServer
    url: str
    token: str
    next_stages: list[Stage] = field(default_factory=list)
    sessions: dict[str, CallSession] = field(default_factory=dict)
    """Every session seen, by CallSid (kept after the server forgets them)."""

    def make_stage(self) -> Stage:
        return self.next_stages.pop(0) if self.next_stages else Echo()

    async def session(self, call_sid: str, timeout: float = 5) -> CallSession:
        """The session of ``call_sid`` once its stage is running."""
        with trio.fail_after(timeout):
            while call_sid not in self.sessions or not tasks_of(self.sessions[call_sid]):
                await trio.sleep(0.005)
        return self.sessions[call_sid]


@asynccontextmanager
async def running_server(
    media_port: int | None = None, token: str = TOKEN, **session: Any
) -> AsyncIterator[Harness]:
    harness: Harness
    config = ServerConfig(
        stage_factory=lambda: harness.make_stage(),
        auth_token=token,
        port=0,
        media_port=media_port,
        session=replace(SessionConfig(), **session),
    )
    server = VoiceServer(config)

    async def watch_sessions() -> None:
        while True:
            for session_ in list(server.sessions):
                if session_.call_sid is not None:
                    harness.sessions.setdefault(session_.call_sid, session_)
            await trio.sleep(0.005)

    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        harness = Harness(server, url, token)
        nursery.start_soon(watch_sessions)
        yield harness
        server.shutdown()
        with trio.fail_after(5):
            while server.sessions:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


def _descendants(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _descendants(child)


def _owner(task: trio.lowlevel.Task) -> object:
    coro = task.coro
    frame = coro.cr_frame if isinstance(coro, types.CoroutineType) else None
    return frame.f_locals.get("self") if frame is not None else None


def tasks_of(session: CallSession) -> list[str]:
    """The names of every live task in the call's nursery, with all their descendants (the
    stage's own tasks too). The nursery is found by its tasks' bound ``self``."""
    found: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        for nursery in task.child_nurseries:
            children = list(nursery.child_tasks)
            if any(_owner(child) is session for child in children):
                found.extend(t.name for child in children for t in _descendants(child))
                continue
            for child in children:
                walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    walk(root)
    return found


async def assert_call_ends_with_its_tasks(
    harness: Harness, session: CallSession, since: float | None = None
) -> CallOutcome:
    """The call ends, and every task of it with it, within 1 s (of ``since``, default now)."""
    with trio.fail_at((trio.current_time() if since is None else since) + 1):
        while session in harness.server.sessions or tasks_of(session):
            await trio.sleep(0.005)
    assert session.outcome is not None
    return session.outcome


# -- healthy calls --------------------------------------------------------------------------------


def assert_lost_no_frame(record: StreamRecord, outcome: CallOutcome | None) -> None:
    """A healthy echo call lost nothing: every frame sent was parsed, none skipped or dropped,
    and what came back is the caller's audio byte for byte, in order, up to the few frames still
    in flight when the caller hung up."""
    assert outcome is not None, "the call has not ended"
    assert outcome.reason == "stop", outcome
    assert not record.closed_by_server and record.errors == []
    assert outcome.sequence_anomalies == 0 and outcome.dropped_frames == 0, outcome
    assert record.frames_sent <= outcome.media_frames <= record.frames_sent + 1
    echoed = b"".join(payload for _, payload in record.received)
    assert len(echoed) > 0
    assert echoed == record.mic[: len(echoed)], "an echoed frame is missing or out of order"
    assert len(record.mic) - len(echoed) <= 5 * FRAME_BYTES


def test_the_lost_frame_check_can_fail() -> None:
    mic = b"".join(bytes([i]) * FRAME_BYTES for i in range(20))
    record = StreamRecord(stream_sid="MZ" + "0" * 32, frames_sent=20, mic=bytearray(mic))
    frames = [(0.0, mic[i : i + FRAME_BYTES]) for i in range(0, len(mic), FRAME_BYTES)]
    outcome = CallOutcome("CA1", "MZ1", CallEnd("stop", 1000), 20, 0, 0, 0, None)
    record.received = list(frames)
    assert_lost_no_frame(record, outcome)  # complete: passes
    record.received = frames[:7] + frames[8:]
    with pytest.raises(AssertionError, match="missing"):
        assert_lost_no_frame(record, outcome)
    record.received = list(frames)
    for broken in (replace(outcome, dropped_frames=1), replace(outcome, sequence_anomalies=1)):
        with pytest.raises(AssertionError):
            assert_lost_no_frame(record, broken)
    with pytest.raises(AssertionError):
        assert_lost_no_frame(record, replace(outcome, media_frames=19))


@asynccontextmanager
async def healthy_calls(harness: Harness, count: int = HEALTHY_CALLS) -> AsyncIterator[None]:
    """``count`` echo calls that keep speaking until the block exits, then are checked."""
    audio = spoken(sentences()[1])
    done = trio.Event()
    records: list[StreamRecord] = []

    async def healthy() -> None:
        async with open_inbound_call(harness.url, harness.token) as call:
            while not done.is_set():
                await call.say(audio[:16000])
            await call.pause(0.2)
        records.append(call.record)

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(healthy)
        with trio.fail_after(5):  # all of them running (and given their stage) before the fault
            while sum(1 for s in harness.sessions.values() if tasks_of(s)) < count:
                await trio.sleep(0.01)
        yield
        done.set()
    assert len(records) == count
    sessions = [harness.sessions[record_call_sid(harness, record)] for record in records]
    with trio.fail_after(2):  # the server may still be finishing its side of the close
        while any(session.outcome is None for session in sessions):
            await trio.sleep(0.01)
    for record, session in zip(records, sessions, strict=True):
        assert_lost_no_frame(record, session.outcome)


def record_call_sid(harness: Harness, record: StreamRecord) -> str:
    return next(
        sid
        for sid, session in harness.sessions.items()
        if session.start is not None and session.start.stream_sid == record.stream_sid
    )


# -- 1. a stage that produces audio faster than real time ----------------------------------------


class FastProducer(Stage):
    """Pushes 60 s of audio as fast as playout takes it, 20 ms at a time."""

    def __init__(self, seconds: int = 60) -> None:
        self.frames = seconds * 50
        self.produced = 0

    async def on_start(self, call: CallContext) -> None:
        for _ in range(self.frames):
            await call.play_ulaw(TONE, label="flood")
            self.produced += FRAME_BYTES


def queued_at_twilio(record: StreamRecord) -> int:
    """Bytes of bot audio received by the emulated Twilio and not played yet."""
    received = sum(len(payload) for _, payload in record.received)
    return received - FRAME_BYTES * sum(record.played)


@MEDIA_PATHS
async def test_a_stage_faster_than_real_time_is_paced_and_its_call_ends_cleanly(
    media_port: int | None,
) -> None:
    lead_ms = PlayoutConfig().lead_ms
    stage = FastProducer()
    async with running_server(media_port) as harness, healthy_calls(harness):
        harness.next_stages.append(stage)
        async with open_inbound_call(harness.url, TOKEN) as call:
            session = await harness.session(call.call_sid)
            with trio.fail_after(5):
                while not call.record.received:
                    await trio.sleep(0.005)
            first = call.record.received[0][0]
            max_queued = 0
            for _ in range(60):  # 3 s
                await trio.sleep(0.05)
                max_queued = max(max_queued, queued_at_twilio(call.record))
            assert tasks_of(session)
            received_ms = sum(len(p) for _, p in call.record.received) // 8
            streamed_ms = (call.record.received[-1][0] - first) * 1000
        outcome = await assert_call_ends_with_its_tasks(harness, session)
    # Twilio was never handed more than the configured lead ahead of its playback ...
    assert max_queued <= (lead_ms + 100) * 8, max_queued / 8
    # ... so the audio arrived in real time: as much as the time it took, plus the lead.
    assert streamed_ms - 200 <= received_ms <= streamed_ms + lead_ms + 100
    assert stage.produced > received_ms * 8  # the stage was faster than real time
    assert outcome.reason == "stop" and outcome.close_code == 1000
    assert not call.record.closed_by_server and call.record.errors == []
    assert call.record.heard_ms() > 2000


async def test_a_stage_faster_than_real_time_is_back_pressured() -> None:
    stage = FastProducer()
    async with running_server() as harness, healthy_calls(harness):
        harness.next_stages.append(stage)
        async with open_inbound_call(harness.url, TOKEN) as call:
            session = await harness.session(call.call_sid)
            playout = session._playout
            assert playout is not None
            held_ms = 0
            for _ in range(30):  # 1.5 s
                await trio.sleep(0.05)
                queued = playout.core.statistics().queued_ms
                inbox = session._playout_inbox.statistics().current_buffer_used
                held_ms = max(held_ms, queued + inbox * 20)
            sent_ms = playout.core.statistics().sent_ms
        await assert_call_ends_with_its_tasks(harness, session)
    # What the call holds for the caller stays within playout's fill and the lead, and the
    # stage got no further ahead of the caller than that.
    bound_ms = PlayoutConfig().max_queued_ms + PlayoutConfig().lead_ms + 200
    assert held_ms <= bound_ms
    assert stage.produced // 8 - sent_ms <= bound_ms


# -- 2. a caller that stops reading ------------------------------------------------------------


class Amplifier(Stage):
    """For every 20 ms heard, plays 1 s, unpaced: 50 times faster than real time."""

    receives_audio = True
    turn_detection = False
    barge_in = False
    paced = False

    def __init__(self) -> None:
        self.produced = 0

    async def on_audio(self, call: CallContext, audio: Audio) -> None:
        for _ in range(50):
            await call.play_ulaw(TONE, label="flood")
            self.produced += FRAME_BYTES


@asynccontextmanager
async def deaf_caller(harness: Harness) -> AsyncIterator[tuple[str, Callable[[], Awaitable[None]]]]:
    """A Twilio that streams the microphone but never reads its socket after the handshake
    (plain TCP and wsproto: no background reader). Yields the CallSid and a function that drops
    the TCP connection."""
    inbound = await ring(harness.url, TOKEN)
    url = urlsplit(inbound.connect.url)
    assert url.hostname is not None and url.port is not None
    tcp = await trio.open_tcp_stream(url.hostname, url.port)
    try:
        ws = WSConnection(ConnectionType.CLIENT)
        signature = compute_signature(inbound.connect.url, {}, TOKEN)
        await tcp.send_all(
            ws.send(
                Request(
                    host=url.netloc,
                    target=url.path,
                    extra_headers=[(b"X-Twilio-Signature", signature.encode())],
                )
            )
        )
        with trio.fail_after(5):
            while not any(isinstance(e, AcceptConnection) for e in ws.events()):
                ws.receive_data(await tcp.receive_some(65536))
        stream_sid = new_sid("MZ")
        parameters = dict(inbound.connect.parameters)
        start = twilio_side.start_message(
            1, stream_sid, inbound.account_sid, inbound.call_sid, parameters, ("inbound",)
        )
        for message in (twilio_side.connected_message(), start):
            await tcp.send_all(ws.send(TextMessage(message)))

        async def microphone() -> None:
            chunk, next_due = 0, trio.current_time()
            while True:
                chunk += 1
                message = twilio_side.inbound_media_message(
                    chunk + 1,
                    stream_sid=stream_sid,
                    chunk=chunk,
                    timestamp=(chunk - 1) * 20,
                    payload=TONE,
                )
                try:
                    await tcp.send_all(ws.send(TextMessage(message)))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                next_due += 0.02
                await trio.sleep_until(next_due)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(microphone)
            yield inbound.call_sid, tcp.aclose
            nursery.cancel_scope.cancel()
    finally:
        await tcp.aclose()


def held_ms(session: CallSession) -> int:
    """Audio the call holds for its caller (20 ms frames here): playout's queue and inbox."""
    assert session._playout is not None
    queued = session._playout.core.statistics().queued_ms
    return queued + session._playout_inbox.statistics().current_buffer_used * 20


def vm_rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@MEDIA_PATHS
async def test_a_caller_that_stops_reading_blocks_its_call_and_counts_drops(
    media_port: int | None,
) -> None:
    stage = Amplifier()
    async with running_server(media_port) as harness, healthy_calls(harness):
        harness.next_stages.append(stage)
        async with deaf_caller(harness) as (call_sid, drop_connection):
            session = await harness.session(call_sid)
            # The socket's buffers fill; then the stage stops getting anywhere.
            with trio.fail_after(10):
                produced, still = -1, 0
                while still < 2:
                    still = still + 1 if stage.produced == produced else 0
                    produced = stage.produced
                    await trio.sleep(0.25)
            sent_frames = session.counts().frames_out
            dropped = session.counts().frames_dropped
            rss = vm_rss_kib()
            await trio.sleep(1.5)
            # Blocked, not buffering: nothing more produced or sent, little held for the caller,
            # and the caller's audio dropping (counted) meanwhile.
            assert stage.produced == produced
            assert session.counts().frames_out == sent_frames
            assert held_ms(session) <= session.config.playout_inbox_size * 20
            assert session.counts().frames_dropped >= dropped + 10
            assert vm_rss_kib() - rss < 8 * 1024  # the stage offered 75 s of audio meanwhile
            assert len(tasks_of(session)) >= 4
            await drop_connection()
            outcome = await assert_call_ends_with_its_tasks(harness, session)
    assert outcome.reason == "peer-closed"
    assert outcome.dropped_frames >= dropped + 10


# -- 3. a socket dropped mid-utterance -----------------------------------------------------------


class Watched(Stage):
    """Runs ``inner`` and notes the type of every frame it takes from its inbox."""

    def __init__(self, inner: Stage) -> None:
        self.inner = inner
        self.seen: list[str] = []
        self.receives_audio = inner.receives_audio  # type: ignore[misc]
        self.turn_detection = inner.turn_detection  # type: ignore[misc]
        self.barge_in = inner.barge_in  # type: ignore[misc]
        self.paced = inner.paced  # type: ignore[misc]

    async def run(self, call: CallContext) -> None:
        inbox = call._inbox
        receive = inbox.receive

        async def noted() -> Frame:
            frame = await receive()
            self.seen.append(type(frame).__name__)
            return frame

        inbox.receive = noted  # type: ignore[method-assign]
        await self.inner.run(call)


async def turn_echo() -> Stage:
    return TurnEcho()


async def local_agent() -> Stage:
    """The offline agent with its recognizer already built: a call dropped while its first
    recognizer is still loading (in an uncancellable worker thread) lingers until the load is
    over, 2-4 s here; that known gap is not what this test is about."""
    from pipelines.local import LocalAgent
    from pipelines.stt import Recognizer

    recognizer = await trio.to_thread.run_sync(Recognizer)
    return LocalAgent(recognizer=lambda: recognizer)


@pytest.mark.parametrize("make_stage", [turn_echo, local_agent], ids=["turn-echo", "local"])
async def test_a_socket_dropped_mid_utterance_ends_its_call_and_every_task(
    make_stage: Callable[[], Awaitable[Stage]],
) -> None:
    stage = Watched(await make_stage())
    audio = spoken(sentences()[0])
    async with running_server() as harness, healthy_calls(harness):
        harness.next_stages.append(stage)
        async with open_inbound_call(harness.url, TOKEN) as call, trio.open_nursery() as speaking:
            session = await harness.session(call.call_sid)
            speaking.start_soon(call.say, audio)
            with trio.fail_after(len(audio) / 8000):
                while "SpeechStarted" not in stage.seen:
                    await trio.sleep(0.005)
            await trio.sleep(0.3)  # well inside the utterance
            assert call.record.frames_sent * FRAME_BYTES < len(audio) - 8000  # still talking
            assert "Utterance" not in stage.seen and "SpeechEnded" not in stage.seen
            assert len(tasks_of(session)) >= 4
            dropped_at = trio.current_time()
            await call.abort()
            await call.closed.wait()
            speaking.cancel_scope.cancel()
        outcome = await assert_call_ends_with_its_tasks(harness, session, since=dropped_at)
    assert outcome.reason == "peer-closed"
    assert "Utterance" not in stage.seen


# -- 4. Twilio's REST API failing during makeCall ------------------------------------------------

CALLEE = "+14155552671"
FROM = "+15005550006"


@asynccontextmanager
async def twilio_and_server(
    timeout: float = 15.0,
) -> AsyncIterator[tuple[TwilioEmulator, TwilioClient, Harness]]:
    """The Twilio emulator, a REST client to it, and our server keyed with its Auth Token."""
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        credentials = Credentials(emulator.account_sid, emulator.auth_token)
        async with (
            TwilioClient(
                credentials, base_url=emulator.base_url, backoff=0.05, timeout=timeout
            ) as client,
            running_server(token=emulator.auth_token) as harness,
        ):
            yield emulator, client, harness


async def place(client: TwilioClient, harness: Harness, **options: Any) -> dict[str, Any]:
    assert harness.server.public_url is not None
    return await make_call(
        client,
        harness.server.status_board,
        to=CALLEE,
        from_=FROM,
        public_url=harness.server.public_url,
        pipeline="turn-echo",
        **options,
    )


def requests_to(emulator: TwilioEmulator, method: str, path_end: str) -> list[RecordedRequest]:
    return [r for r in emulator.requests if r.method == method and r.path.endswith(path_end)]


async def test_a_500_on_creating_the_call_fails_make_call_once_and_spares_running_calls() -> None:
    async with twilio_and_server() as (emulator, client, harness), healthy_calls(harness):
        emulator.inject(status=500, times=1, path_contains="/Calls.json")  # a retry would work
        with pytest.raises(TwilioAPIError) as info:
            await place(client, harness)
        await trio.sleep(0.5)  # the healthy calls go on after it
    assert (info.value.status, info.value.code) == (500, 20500)
    assert info.value.more_info == "https://www.twilio.com/docs/errors/20500"
    assert [r.status for r in requests_to(emulator, "POST", "/Calls.json")] == [500]
    assert emulator.calls == {}


async def test_a_timed_out_call_creation_is_not_resent_and_spares_running_calls() -> None:
    async with twilio_and_server(timeout=0.5) as (emulator, client, harness):
        async with healthy_calls(harness):
            emulator.delay_after_accept(3, path_contains="/Calls.json")  # created, answered late
            with pytest.raises(TwilioAPIError, match="not retried") as info:
                await place(client, harness)
            await trio.sleep(0.5)
        posts = requests_to(emulator, "POST", "/Calls.json")
        assert info.value.status == 0
        assert len(posts) == 1 and len(emulator.calls) == 1  # Twilio placed it once, no duplicate


async def test_a_429_on_creating_the_call_is_retried_and_the_call_placed_once() -> None:
    async with twilio_and_server() as (emulator, client, harness), healthy_calls(harness):
        emulator.callee(CALLEE, CalleeBehaviour(hang_up_after=1.0))
        emulator.inject(status=429, retry_after=0.2, times=1, path_contains="/Calls.json")
        result = await place(client, harness)
    assert [r.status for r in requests_to(emulator, "POST", "/Calls.json")] == [429, 201]
    assert list(emulator.calls) == [result["callSid"]]
    assert result["status"] == "completed"


async def test_a_500_on_a_status_poll_does_not_abandon_the_call() -> None:
    async with twilio_and_server() as (emulator, client, harness), healthy_calls(harness):
        emulator.status_callbacks_enabled = False
        emulator.callee(CALLEE, CalleeBehaviour(hang_up_after=1.0))
        emulator.inject(status=500, times=1, path_contains="/Calls/CA")
        result = await place(client, harness, first_poll=0.3)
    assert result["status"] == "completed"


# -- 5. status callbacks duplicated or reordered while makeCall waits ---------------------------


@pytest.mark.parametrize(
    ("duplicated", "order", "outcome", "status"),
    [
        (True, "in-order", "answer", "completed"),
        (False, "shuffled", "answer", "completed"),
        (True, "shuffled", "busy", "busy"),
    ],
    ids=["duplicated", "shuffled", "duplicated-shuffled-busy"],
)
async def test_make_call_returns_the_final_status_from_messy_callbacks(
    duplicated: bool, order: CallbackOrder, outcome: Outcome, status: str
) -> None:
    async with twilio_and_server() as (emulator, client, harness), healthy_calls(harness):
        emulator.duplicate_callbacks = duplicated
        emulator.callback_order = order
        emulator.callee(CALLEE, CalleeBehaviour(outcome=outcome, hang_up_after=1.0))
        with trio.fail_after(8):  # no poll is due in time: only the callbacks can end the wait
            result = await place(client, harness, first_poll=60)
        call = emulator.calls[result["callSid"]]
    assert result == {
        "callSid": call.sid,
        "status": status,
        "duration": call.duration,
        "direction": "outbound-api",
    }
    sent = [attempt.params["CallStatus"] for attempt in call.callbacks]
    assert sent.count(status) == (2 if duplicated else 1)
    gets = requests_to(emulator, "GET", f"/Calls/{call.sid}.json")
    assert len(gets) == 1  # the final fetch after the callback, no polling


async def test_make_call_waits_through_signed_duplicated_and_reordered_posts() -> None:
    async with twilio_and_server() as (emulator, client, harness), healthy_calls(harness):
        emulator.status_callbacks_enabled = False  # the test posts them, in its own order
        emulator.callee(CALLEE, CalleeBehaviour(hang_up_after=1.0))
        url = f"{harness.server.public_url}/twilio/status"
        results: list[dict[str, Any]] = []

        async def waiting() -> None:
            results.append(await place(client, harness, first_poll=60))

        async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
            nursery.start_soon(waiting)
            with trio.fail_after(3):
                while not emulator.calls:
                    await trio.sleep(0.01)
            (call,) = emulator.calls.values()

            async def post(status: str, sequence: int, **extra: str) -> None:
                params = {
                    "AccountSid": emulator.account_sid,
                    "CallSid": call.sid,
                    "CallStatus": status,
                    "SequenceNumber": str(sequence),
                    "Direction": "outbound-api",
                    **extra,
                }
                signature = compute_signature(url, params, emulator.auth_token)
                response = await http.post(
                    url, data=params, headers={"X-Twilio-Signature": signature}
                )
                assert response.status_code == 204

            for status, sequence in [("ringing", 1), ("ringing", 1), ("initiated", 0)]:
                await post(status, sequence)
            await post("in-progress", 2)
            await post("in-progress", 2)
            await trio.sleep(0.2)
            assert results == []  # still waiting: nothing final yet
            latest = harness.server.status_board.latest(call.sid)
            assert latest is not None and (latest.status, latest.sequence) == ("in-progress", 2)
            with trio.fail_after(3):
                await call.ended.wait()
            final = {"CallDuration": str(call.duration)}
            await post("completed", 3, **final)
            await post("in-progress", 2)  # late and stale
            await post("completed", 3, **final)  # duplicated
            with trio.fail_after(2):
                while not results:
                    await trio.sleep(0.01)
    assert results == [
        {
            "callSid": call.sid,
            "status": "completed",
            "duration": call.duration,
            "direction": "outbound-api",
        }
    ]
    assert len(requests_to(emulator, "GET", f"/Calls/{call.sid}.json")) == 1  # no polling
