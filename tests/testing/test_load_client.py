"""The load generator's client end to end: against a real ``voice-engine serve``, and against
small fake peers (trio + wsproto) that mark, clear, misbehave or say nothing.

Every run goes through :func:`run_load` in a worker thread under ``trio.fail_after``: a call
that hangs fails the test instead of the suite. Nothing here times the generator's speed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    RejectConnection,
    Request,
    TextMessage,
)

from conftest import Server
from engine.control.signature import is_valid_signature
from engine.media.protocol import (
    Connected,
    InboundEvent,
    Mark,
    Media,
    MediaStreamParser,
    Start,
    Stop,
    clear_message,
    mark_message,
    media_message,
)
from engine.testing.load import LoadCall, LoadPlan, LoadRun, run_load

FRAMES = [bytes([(17 * i) % 256]) * 160 for i in range(13)]
TOKEN = "fake-peer-token"
ServeFn = Callable[..., Server]


def plan(url: str, **options: object) -> LoadPlan:
    base: dict[str, object] = {"calls": 1, "duration": 1.0, "frames": FRAMES}
    return LoadPlan(url=url, **(base | options))  # type: ignore[arg-type]


async def run(load_plan: LoadPlan) -> LoadRun:
    with trio.fail_after(60):
        return await trio.to_thread.run_sync(run_load, load_plan, abandon_on_cancel=True)


def rtts(record: LoadCall) -> list[float]:
    return [e - s for s, e in zip(record.sent, record.echoed, strict=False)]


# ------------------------------------------------------------------- against the real server


@pytest.mark.parametrize("batch", [0.001, 0.0], ids=["tick, kernel timestamps", "per arrival"])
async def test_every_frame_is_echoed_byte_exact_with_its_round_trip(
    serve: ServeFn, batch: float
) -> None:
    server = serve("echo")
    result = await run(plan(server.url, calls=3, auth_token=server.auth_token, batch=batch))
    assert result.peak_streaming == 3 and result.cpu_s > 0
    for record in result.calls:
        assert (record.outcome, record.error, record.phase) == ("admitted", None, "done")
        assert record.call_sid.startswith("CA") and record.bidirectional
        assert len(record.sent) == len(record.echoed) == len(record.lateness) == 50
        # Byte-exact: each echo is compared with the frame sent at its position.
        assert record.mismatched == 0 and record.echo_bytes == 50 * 160
        assert all(0 < rtt < 1 for rtt in rtts(record))  # arrival times on the same clock
        assert record.marks > 0  # the engine marks its playout; each mark came back
        assert record.close_code == 1000


async def test_calls_over_the_ceiling_are_refused_not_failed(serve: ServeFn) -> None:
    server = serve("echo", args=["--max-calls", "1"])
    result = await run(plan(server.url, calls=3, auth_token=server.auth_token))
    outcomes = sorted((r.outcome, r.refusal, r.error) for r in result.calls)
    assert outcomes == [
        ("admitted", None, None),
        ("refused", "reject:busy", None),
        ("refused", "reject:busy", None),
    ]
    refused = [r for r in result.calls if r.outcome == "refused"]
    assert all(len(r.sent) == 0 for r in refused)


async def test_a_wrong_auth_token_fails_the_call_at_the_webhook(serve: ServeFn) -> None:
    server = serve("echo")
    (record,) = (await run(plan(server.url, auth_token="not-the-token"))).calls
    assert record.outcome == "failed" and record.error is not None
    assert "HTTP 403" in record.error and record.phase == "ringing"


# ------------------------------------------------------------------------- fake peers


class Peer:
    """The server end of one fake stream: wsproto over a trio stream, messages parsed by the
    engine's own parser."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self.parser = MediaStreamParser()
        self.pending: list[object] = []
        self.request: Request | None = None

    async def _event(self) -> object | None:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    async def handshake(self) -> Request:
        event = await self._event()
        assert isinstance(event, Request)
        self.request = event
        await self.stream.send_all(self.ws.send(AcceptConnection()))
        return event

    async def receive(self) -> InboundEvent | None:
        """The next message, parsed; ``None`` once the client closed."""
        while True:
            event = await self._event()
            if event is None or isinstance(event, CloseConnection):
                return None
            if isinstance(event, TextMessage):
                return self.parser.receive(event.data)

    async def send(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(Message(data=text)))

    async def close(self, code: int) -> None:
        await self.stream.send_all(self.ws.send(CloseConnection(code=code)))


Behaviour = Callable[[Peer], Awaitable[None]]


async def serve_peer(nursery: trio.Nursery, behaviour: Behaviour) -> str:
    """Serve ``behaviour`` for every connection; the ``ws://`` URL."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await behaviour(Peer(stream))

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/twilio/media"


async def test_a_ws_url_is_dialled_directly_with_custom_parameters() -> None:
    seen: list[InboundEvent] = []
    handshakes: list[Request] = []

    async def record(peer: Peer) -> None:
        handshakes.append(await peer.handshake())
        while (event := await peer.receive()) is not None:
            seen.append(event)
            if isinstance(event, Stop):
                await peer.close(1000)
                return

    async with trio.open_nursery() as nursery:
        url = await serve_peer(nursery, record)
        load = plan(url, duration=0.2, auth_token=TOKEN, parameters={"tenant": "42", "x": "é"})
        (record_,) = (await run(load)).calls
        nursery.cancel_scope.cancel()
    assert (record_.outcome, record_.error) == ("admitted", None)
    (request,) = handshakes
    headers = {k.decode().lower(): v.decode() for k, v in request.extra_headers}
    assert is_valid_signature(url, {}, headers["x-twilio-signature"], TOKEN)
    # The engine's parser took every message in order (it checks sequence numbers itself).
    connected, start, *media, stop = seen
    assert isinstance(connected, Connected) and isinstance(start, Start)
    assert start.custom_parameters == {"tenant": "42", "x": "é"}
    assert start.call_sid == record_.call_sid and start.sequence_number == 1
    frames = [m for m in media if isinstance(m, Media)]
    assert len(frames) == len(media) == 10
    assert [(m.sequence_number, m.chunk, m.timestamp, m.payload) for m in frames] == [
        (2 + i, 1 + i, 20 * i, FRAMES[i]) for i in range(10)
    ]
    assert isinstance(stop, Stop) and stop.call_sid == record_.call_sid
    assert stop.sequence_number == 12


async def test_marks_wait_for_their_audio_and_altered_echoes_count_as_mismatched() -> None:
    times: dict[str, float] = {}

    async def marks(peer: Peer) -> None:
        await peer.handshake()
        start = None
        while not isinstance(start, Start):
            start = await peer.receive()
        sid = start.stream_sid
        # 200 ms of audio at once (the first frame altered), then a mark behind it.
        await peer.send(media_message(sid, b"\xff" * 160))
        for frame in FRAMES[1:10]:
            await peer.send(media_message(sid, frame))
        times["sent"] = trio.current_time()
        await peer.send(mark_message(sid, "after-audio"))
        while (event := await peer.receive()) is not None:
            if isinstance(event, Mark):
                times[event.name] = trio.current_time()
                if event.name == "after-audio":  # nothing is playing now: echoed at once
                    await peer.send(mark_message(sid, "idle"))
            if isinstance(event, Stop):
                await peer.close(1000)
                return

    async with trio.open_nursery() as nursery:
        url = await serve_peer(nursery, marks)
        (record,) = (await run(plan(url, duration=1.0))).calls
        nursery.cancel_scope.cancel()
    assert (record.outcome, record.error) == ("admitted", None)
    assert record.mismatched == 1 and len(record.echoed) == 10 and record.marks == 2
    # Echoed only once the 200 ms queued before it had played (the playback clock).
    assert times["after-audio"] - times["sent"] >= 0.2 - 0.005
    assert "idle" in times


async def test_clear_drops_the_buffered_audio_and_echoes_pending_marks() -> None:
    times: dict[str, float] = {}

    async def clears(peer: Peer) -> None:
        await peer.handshake()
        start = None
        while not isinstance(start, Start):
            start = await peer.receive()
        sid = start.stream_sid
        for _ in range(250):  # 5 s of audio queued
            await peer.send(media_message(sid, FRAMES[0]))
        await peer.send(mark_message(sid, "end-of-reply"))
        await trio.sleep(0.1)
        times["cleared"] = trio.current_time()
        await peer.send(clear_message(sid))
        while (event := await peer.receive()) is not None:
            if isinstance(event, Mark):
                times[event.name] = trio.current_time()
            if isinstance(event, Stop):
                await peer.close(1000)
                return

    async with trio.open_nursery() as nursery:
        url = await serve_peer(nursery, clears)
        (record,) = (await run(plan(url, duration=1.0))).calls
        nursery.cancel_scope.cancel()
    assert (record.outcome, record.error) == ("admitted", None)
    assert len(record.clears) == 1 and record.marks == 1
    # The mark came back with the clear, long before its 5 s of audio could have played.
    assert times["end-of-reply"] - times["cleared"] < 4.0


async def _close_early(peer: Peer) -> None:
    await peer.handshake()
    for _ in range(5):
        await peer.receive()
    await peer.close(1011)
    await trio.sleep(5)


async def _drop_mid_stream(peer: Peer) -> None:
    await peer.handshake()
    for _ in range(5):
        await peer.receive()
    await peer.stream.aclose()


async def _garbage(peer: Peer) -> None:
    await peer.handshake()
    await peer.stream.send_all(b"\x85\xff\x00garbage-garbage")
    await trio.sleep(5)


async def _not_json(peer: Peer) -> None:
    await peer.handshake()
    await peer.send("{this is not json")
    await trio.sleep(5)


async def _silent_handshake(peer: Peer) -> None:
    await peer.stream.receive_some(65536)  # reads the upgrade request, never answers
    await trio.sleep(30)


async def _refuse_handshake(peer: Peer) -> None:
    await peer._event()
    await peer.stream.send_all(peer.ws.send(RejectConnection(status_code=403)))


async def _http_silent(peer: Peer) -> None:
    await peer.stream.receive_some(65536)
    await trio.sleep(30)


async def _http_garbage(peer: Peer) -> None:
    await peer.stream.receive_some(65536)
    await peer.stream.send_all(b"\x00\x01\x02 hello\r\n\r\n")


FAILURES = [
    pytest.param(_close_early, "ws", "closed the stream while streaming (code 1011)", id="close"),
    pytest.param(_drop_mid_stream, "ws", "closed the connection while streaming", id="drop"),
    pytest.param(_garbage, "ws", "protocol error", id="garbage frames"),
    pytest.param(_not_json, "ws", "invalid JSON", id="not JSON"),
    pytest.param(_silent_handshake, "ws", "no handshake answer within 0.5 s", id="silent ws"),
    pytest.param(_refuse_handshake, "ws", "handshake refused: HTTP 403", id="403 ws"),
    pytest.param(_http_silent, "http", "no webhook answer within 0.5 s", id="silent webhook"),
    pytest.param(_http_garbage, "http", "not valid HTTP", id="garbage webhook"),
]


@pytest.mark.parametrize(("behaviour", "scheme", "error"), FAILURES)
async def test_a_misbehaving_peer_ends_the_call_as_a_counted_error(
    behaviour: Behaviour, scheme: str, error: str
) -> None:
    async with trio.open_nursery() as nursery:
        url = await serve_peer(nursery, behaviour)
        if scheme == "http":
            url = "http" + url[2:].removesuffix("/twilio/media")
        result = await run(plan(url, calls=2, duration=2.0, setup_timeout=0.5))
        nursery.cancel_scope.cancel()
    for record in result.calls:
        assert record.outcome == "failed"
        assert record.error is not None and error in record.error


async def test_nobody_listening_is_a_counted_error() -> None:
    with trio.socket.socket() as sock:  # a port that was free a moment ago
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (record,) = (await run(plan(f"ws://127.0.0.1:{port}/twilio/media"))).calls
    assert record.outcome == "failed" and record.error is not None
    assert "refused" in record.error.lower()


def test_a_plan_with_an_unusable_url_is_refused() -> None:
    for url in ("ftp://x", "wss:///no-host", "http:///no-host", "ws://h:port/x", "example.com"):
        with pytest.raises(ValueError):
            run_load(plan(url))
