"""Tests for engine.transport.wsframe: the lean frame codec, checked against wsproto's own output.

Every stream is decoded twice — by wsproto alone, and by FastFrameDecoder with wsproto behind
it for what it hands over — in several chunkings; both must yield the same messages, control
events and errors.
"""

from __future__ import annotations

import os
import random
import struct

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from engine.transport.wsframe import FastFrameDecoder, client_text_frame, text_frame, unmask

MAX = 65536


def open_pair() -> tuple[WSConnection, WSConnection]:
    """A client and a server wsproto connection past the handshake."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="localhost", target="/twilio/media")))
    assert any(isinstance(e, Request) for e in server.events())
    client.receive_data(server.send(AcceptConnection()))
    assert any(isinstance(e, AcceptConnection) for e in client.events())
    return client, server


def masked(payload: bytes, first: int = 0x81, *, length_form: str = "minimal") -> bytes:
    """A hand-built masked client frame (for what wsproto's client would never send)."""
    mask = os.urandom(4)
    n = len(payload)
    if length_form == "minimal" and n < 126:
        head = bytes((first, 0x80 | n))
    elif length_form in ("minimal", "16") and n < 65536:
        head = bytes((first, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, 0x80 | 127)) + struct.pack("!Q", n)
    return head + mask + unmask(payload, mask)


def normalize(events: list[object]) -> list[tuple[object, ...]]:
    """wsproto events as comparable tuples, partial messages joined."""
    out: list[tuple[object, ...]] = []
    text: list[str] = []
    data: list[bytes] = []
    for event in events:
        if isinstance(event, TextMessage):
            text.append(event.data)
            if event.message_finished:
                out.append(("text", "".join(text)))
                text = []
        elif isinstance(event, BytesMessage):
            data.append(bytes(event.data))
            if event.message_finished:
                out.append(("bytes", b"".join(data)))
                data = []
        elif isinstance(event, Ping | Pong):
            out.append((type(event).__name__, bytes(event.payload)))
        elif isinstance(event, CloseConnection):
            out.append(("close", event.code))
        else:
            out.append(("other", type(event).__name__))
    return out


def with_wsproto(stream: bytes, chunks: list[int]) -> list[tuple[object, ...]]:
    _, server = open_pair()
    events: list[object] = []
    try:
        for piece in split(stream, chunks):
            server.receive_data(piece)
            events.extend(server.events())
    except RemoteProtocolError as exc:
        events.append(("error", exc.event_hint.code if exc.event_hint else None))  # type: ignore[attr-defined]
    return [e if isinstance(e, tuple) else normalize([e])[0] for e in _merge(events)]


def with_fast_path(stream: bytes, chunks: list[int]) -> list[tuple[object, ...]]:
    _, server = open_pair()
    decoder = FastFrameDecoder(MAX)
    events: list[object] = []
    try:
        for piece in split(stream, chunks):
            for item in decoder.feed(piece):
                if isinstance(item, str):
                    events.append(TextMessage(data=item))
                else:
                    server.receive_data(item)
                    events.extend(server.events())
    except RemoteProtocolError as exc:
        events.append(("error", exc.event_hint.code if exc.event_hint else None))  # type: ignore[attr-defined]
    return [e if isinstance(e, tuple) else normalize([e])[0] for e in _merge(events)]


def _merge(events: list[object]) -> list[object]:
    """Join partial text/bytes messages into one finished event each (both sides alike)."""
    out: list[object] = []
    text: list[str] = []
    data: list[bytes] = []
    for event in events:
        if isinstance(event, TextMessage):
            text.append(event.data)
            if event.message_finished:
                out.append(TextMessage(data="".join(text)))
                text = []
        elif isinstance(event, BytesMessage):
            data.append(bytes(event.data))
            if event.message_finished:
                out.append(BytesMessage(data=b"".join(data)))
                data = []
        else:
            out.append(event)
    return out


def split(stream: bytes, chunks: list[int]) -> list[bytes]:
    """``stream`` cut at the sizes in ``chunks`` (cycled); [] means one piece."""
    if not chunks:
        return [stream]
    pieces, pos, i = [], 0, 0
    while pos < len(stream):
        size = chunks[i % len(chunks)]
        pieces.append(stream[pos : pos + size])
        pos += size
        i += 1
    return pieces


CHUNKINGS = [[], [1], [2, 3], [7], [100], [333, 1], [4096]]


def media_like(n: int) -> str:
    return '{"event":"media","payload":"' + "A" * n + '"}'


def client_stream(*messages: object) -> bytes:
    """What wsproto's client sends for ``messages`` (str, bytes, Ping, CloseConnection, …)."""
    client, _ = open_pair()
    out = b""
    for m in messages:
        if isinstance(m, str):
            out += client.send(Message(data=m))
        elif isinstance(m, bytes):
            out += client.send(Message(data=bytes(m)))
        else:
            out += client.send(m)  # type: ignore[arg-type]
    return out


STREAMS = {
    "small texts": client_stream("a", "", "héllo ✓", media_like(300)),
    "lengths at the boundaries": client_stream(
        "x" * 125, "x" * 126, "x" * 127, "x" * 65535, "x" * 65536
    ),
    "over the limit": client_stream("y" * 10, "z" * (MAX + 1), "after"),
    "ping between messages": client_stream("one", Ping(b"p1"), "two", Ping(b""), "three"),
    "close": client_stream("bye", CloseConnection(1000, "done")),
    "binary": client_stream("t", b"\x00\x01", "t2"),
    "unmasked frame": client_stream("ok") + b"\x81\x02hi",
    "invalid utf-8": client_stream("ok") + masked(b"\xff\xfe") + client_stream("later"),
    "rsv bit": client_stream("ok") + masked(b"x", first=0xC1),
    "non-minimal length": client_stream("ok") + masked(b"short", length_form="16"),
    "64-bit length": client_stream("ok") + masked(b"q" * 200, length_form="64"),
    "continuation without start": client_stream("ok") + masked(b"x", first=0x80),
    "reserved opcode": client_stream("ok") + masked(b"x", first=0x83),
    "reserved control opcode": client_stream("ok") + masked(b"x", first=0x8B),
    "long control frame": client_stream("ok") + masked(b"p" * 126, first=0x89),
    "fragmented control frame": client_stream("ok") + masked(b"p", first=0x09),
}


def fragmented_stream() -> bytes:
    client, _ = open_pair()
    return (
        client.send(Message(data="a"))
        + client.send(Message(data="par", message_finished=False))
        + client.send(Ping(b"mid"))
        + client.send(Message(data="tial"))
        + client.send(Message(data="b"))
    )


STREAMS["fragmented, a ping inside"] = fragmented_stream()


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=str)
@pytest.mark.parametrize("name", list(STREAMS))
def test_fast_path_matches_wsproto(name: str, chunks: list[int]) -> None:
    stream = STREAMS[name]
    expected = with_wsproto(stream, chunks)
    assert with_fast_path(stream, chunks) == expected
    assert expected  # every stream yields something to compare


def test_common_frames_never_reach_wsproto() -> None:
    decoder = FastFrameDecoder(MAX)
    stream = client_stream(*(media_like(n) for n in (0, 100, 300, 5000)))
    for piece in split(stream, [50]):
        assert all(isinstance(item, str) for item in decoder.feed(piece))
    assert not decoder.passthrough


def test_control_frames_are_handed_over_alone_and_the_fast_path_goes_on() -> None:
    decoder = FastFrameDecoder(MAX)
    items = decoder.feed(client_stream("a", Ping(b"x"), "b"))
    assert [type(i) for i in items] == [str, bytes, str]
    assert not decoder.passthrough


@pytest.mark.parametrize(
    "name",
    ["binary", "fragmented, a ping inside", "unmasked frame", "invalid utf-8", "over the limit"],
)
def test_an_unusual_frame_hands_the_rest_of_the_stream_to_wsproto(name: str) -> None:
    decoder = FastFrameDecoder(MAX)
    items = decoder.feed(STREAMS[name])
    assert decoder.passthrough
    assert isinstance(items[-1], bytes)
    assert decoder.feed(b"more") == [b"more"]


def test_detach_returns_the_partial_frame_from_its_start() -> None:
    decoder = FastFrameDecoder(MAX)
    frame = client_stream("hello there")
    assert decoder.feed(frame[:5]) == []
    assert decoder.detach() == frame[:5]
    assert decoder.passthrough


@pytest.mark.parametrize(
    "text", ["", "a", "x" * 125, "x" * 126, "x" * 65535, "x" * 65536, "héllo ✓", media_like(300)]
)
def test_text_frame_is_what_wsproto_sends(text: str) -> None:
    _, server = open_pair()
    assert text_frame(text) == server.send(Message(data=text))


@pytest.mark.parametrize(
    "text", ["", "a", "x" * 125, "x" * 126, "x" * 65535, "x" * 65536, "héllo ✓", media_like(300)]
)
def test_client_text_frame_is_read_by_wsproto_and_the_fast_path(text: str) -> None:
    _, server = open_pair()
    server.receive_data(client_text_frame(text))
    assert normalize(list(server.events())) == [("text", text)]
    frame = client_text_frame(text)
    if len(text.encode()) < 65536:  # decoded on the fast path
        assert FastFrameDecoder(MAX).feed(frame) == [text]
    else:  # 64-bit lengths are handed to wsproto, as they are
        assert FastFrameDecoder(MAX).feed(frame) == [frame]


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 160, 333])
def test_unmask_is_its_own_inverse_and_matches_xor(size: int) -> None:
    payload = random.Random(size).randbytes(size)
    mask = bytes((0x12, 0x34, 0x56, 0x78))
    masked_payload = unmask(payload, mask)
    assert masked_payload == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert unmask(masked_payload, mask) == payload
