"""The load generator over TLS (``https://`` webhooks, ``wss://`` streams) against small trio
peers with a test CA, and its record of a voice agent's replies (when each began to play,
where its sound begins)."""

from __future__ import annotations

import contextlib
import itertools
import ssl
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trustme
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage

from engine.media.protocol import Media, MediaStreamParser, Start, Stop, media_message
from engine.testing.load import LoadPlan, LoadRun, run_load
from engine.testing.load_tls import TlsSession, client_context
from engine.testing.load_wire import WireError
from engine.tts import speak_ulaw

FRAMES = [bytes([(31 * i) % 256]) * 160 for i in range(7)]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = client_context()
    ca.configure_trust(context)
    return context


async def run(plan: LoadPlan) -> LoadRun:
    with trio.fail_after(60):
        return await trio.to_thread.run_sync(run_load, plan, abandon_on_cancel=True)


class Peer:
    """The server end of one stream: wsproto over a trio stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self.parser = MediaStreamParser()
        self.pending: list[object] = []
        self.sid = ""

    async def event(self) -> object | None:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    async def messages(self) -> list[object]:
        """Accept the stream, then parse messages until ``stop`` (closing with 1000)."""
        request = await self.event()
        assert isinstance(request, Request)
        await self.stream.send_all(self.ws.send(AcceptConnection()))
        seen: list[object] = []
        while (event := await self.event()) is not None and not isinstance(event, CloseConnection):
            if isinstance(event, TextMessage):
                seen.append(message := self.parser.receive(event.data))
                if isinstance(message, Start):
                    self.sid = message.stream_sid
                await self.on_message(message)
                if isinstance(message, Stop):
                    await self.stream.send_all(self.ws.send(CloseConnection(code=1000)))
                    break
        return seen

    async def on_message(self, message: object) -> None:
        """Echo media back."""
        if isinstance(message, Media):
            await self.send(media_message(self.sid, message.payload))

    async def send(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(Message(data=text)))


Handler = Callable[[trio.abc.Stream], Awaitable[None]]


async def serve_tls(nursery: trio.Nursery, context: ssl.SSLContext, handler: Handler) -> int:
    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await handler(stream)

    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, handle, 0, context, host="127.0.0.1")
    )
    return int(listeners[0].transport_listener.socket.getsockname()[1])


async def echo(stream: trio.abc.Stream) -> None:
    await Peer(stream).messages()


async def test_a_wss_stream_is_echoed_through_tls(ca: trustme.CA) -> None:
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_context(ca), echo)
        plan = LoadPlan(
            url=f"wss://localhost:{port}/echo",
            calls=2,
            duration=0.4,
            frames=FRAMES,
            ssl_context=trusting(ca),
        )
        result = await run(plan)
        nursery.cancel_scope.cancel()
    for record in result.calls:
        assert (record.outcome, record.error) == ("admitted", None)
        assert len(record.sent) == len(record.echoed) == 20 and record.mismatched == 0
        assert record.close_code == 1000


async def test_an_https_webhook_leads_to_its_wss_stream(ca: trustme.CA) -> None:
    posts: list[bytes] = []

    async def webhook_or_stream(stream: trio.abc.Stream) -> None:
        head = await stream.receive_some(65536)
        if head.startswith(b"POST"):
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(65536)
            posts.append(head)
            twiml = (
                b'<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
                b'<Stream url="/media"><Parameter name="who" value="tls"/></Stream>'
                b"</Connect></Response>"
            )
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%b" % (len(twiml), twiml)
            )
            return
        peer = Peer(stream)
        peer.ws.receive_data(head)
        peer.pending.extend(peer.ws.events())
        seen = await peer.messages()
        start = next(m for m in seen if isinstance(m, Start))
        assert start.custom_parameters == {"who": "tls"}

    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_context(ca), webhook_or_stream)
        plan = LoadPlan(
            url=f"https://localhost:{port}/voice",
            webhook_path="",
            calls=1,
            duration=0.3,
            frames=FRAMES,
            auth_token="secret",
            ssl_context=trusting(ca),
        )
        (record,) = (await run(plan)).calls
        nursery.cancel_scope.cancel()
    assert (record.outcome, record.error) == ("admitted", None)
    assert len(record.echoed) == 15
    (post,) = posts
    assert post.startswith(b"POST /voice HTTP/1.1") and b"X-Twilio-Signature" in post


async def test_an_untrusted_certificate_fails_the_call_as_a_counted_error(
    ca: trustme.CA,
) -> None:
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_context(ca), echo)
        plan = LoadPlan(url=f"wss://localhost:{port}/echo", calls=1, duration=0.2, frames=FRAMES)
        (record,) = (await run(plan)).calls  # the system's CAs do not know the test CA
        nursery.cancel_scope.cancel()
    assert record.outcome == "failed" and record.error is not None
    assert "TLS handshake failed" in record.error and "CERTIFICATE_VERIFY_FAILED" in record.error


def test_tls_sans_io_reports_a_peer_that_is_not_tls() -> None:
    session = TlsSession(client_context(), "localhost")
    hello = session.handshake()
    assert hello and not session.established  # the ClientHello, waiting for the server
    with pytest.raises(WireError, match="TLS handshake failed"):
        session.handshake(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(WireError, match="closed the connection during the TLS handshake"):
        TlsSession(client_context(), "localhost").handshake(b"")


async def test_replies_are_recorded_with_when_they_played_and_where_sound_begins() -> None:
    """A voice agent's reply: 100 ms of silence then a word, sent at once after the caller's
    third frame; with ``record_replies`` each message's playback start and sound are kept."""
    word = speak_ulaw("yes")
    reply = b"\xff" * 800 + word[: len(word) // 160 * 160]

    class Agent(Peer):
        frames = 0

        async def on_message(self, message: object) -> None:
            if isinstance(message, Media):
                self.frames += 1
                if self.frames == 3:
                    for i in range(0, len(reply), 320):  # 40 ms messages, all at once
                        await self.send(media_message(self.sid, reply[i : i + 320]))

    async def agent(stream: trio.abc.Stream) -> None:
        await Agent(stream).messages()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, agent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        plan = LoadPlan(
            url=f"ws://127.0.0.1:{port}/agent",
            calls=1,
            duration=0.2 + len(reply) / 8000,
            frames=[b"\xff" * 160],
            record_replies=True,
        )
        (record,) = (await run(plan)).calls
        nursery.cancel_scope.cancel()
    assert (record.outcome, record.error) == ("admitted", None)
    messages = -(-len(reply) // 320)
    assert len(record.echoed) == len(record.heard) == len(record.sound_ms) == messages
    assert list(record.reply_bytes) == [len(reply[i : i + 320]) for i in range(0, len(reply), 320)]
    # The first messages are silence; the word's sound starts where the test put it.
    first = next(i for i, ms in enumerate(record.sound_ms) if ms >= 0)
    assert first * 40 + record.sound_ms[first] >= 100
    # All arrived at once: each plays when the one before it has played (40 ms each).
    starts = list(record.heard)
    assert starts[0] == record.echoed[0]
    assert all(b - a == pytest.approx(0.040, abs=1e-6) for a, b in itertools.pairwise(starts))
