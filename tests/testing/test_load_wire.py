"""The load generator's wire (sans-IO): frames checked against wsproto, messages against the
engine's own parser and builders, the outbound reader against what the engine writes."""

from __future__ import annotations

import json

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)

from engine.media.protocol import (
    Connected,
    Mark,
    Media,
    MediaStreamParser,
    Start,
    Stop,
    clear_message,
    mark_message,
    media_message,
)
from engine.testing import twilio_side
from engine.testing.load_wire import (
    CLEAR,
    MARK,
    MEDIA,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    CallMessages,
    ServerFrameDecoder,
    WireError,
    b64_frames,
    client_frame,
    close_payload,
    payload_size,
    read_outbound,
)

SID = "MZ" + "0123456789abcdef" * 2
ACCOUNT = "AC" + "1" * 32
CALL = "CA" + "2" * 32
FRAMES = [bytes([i]) * 160 for i in range(3)]


def accepted_server() -> WSConnection:
    """A wsproto server past the handshake (it then reads client frames, as the engine would)."""
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="x", target="/twilio/media")))
    assert isinstance(next(server.events()), Request)
    server.send(AcceptConnection())
    return server


def server_bytes(*events: object) -> bytes:
    """What a wsproto server writes for ``events`` (unmasked frames)."""
    server = accepted_server()
    return b"".join(server.send(e) for e in events)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_client_frames_are_read_by_wsproto_and_masked_with_zeros(size: int) -> None:
    text = "é" * (size // 2) + "x" * (size % 2)  # two bytes per "é": ``size`` bytes in all
    payload = text.encode()
    assert len(payload) == size
    frame = client_frame(payload)
    header = 2 + (0 if len(payload) < 126 else 2 if len(payload) < 65536 else 8)
    assert frame[1] & 0x80 and frame[header : header + 4] == b"\0\0\0\0"
    assert frame[header + 4 :] == payload  # XOR with zero: the payload as it is
    server = accepted_server()
    server.receive_data(frame)
    (event,) = list(server.events())
    assert isinstance(event, TextMessage) and event.data == text and event.message_finished


def test_a_close_and_a_pong_frame_are_what_wsproto_reads() -> None:
    server = accepted_server()
    server.receive_data(client_frame(close_payload(1000, "bye"), OP_CLOSE))
    (event,) = list(server.events())
    assert isinstance(event, CloseConnection) and (event.code, event.reason) == (1000, "bye")


SERVER_STREAMS = [
    pytest.param([Message(data="hi")], [(OP_TEXT, b"hi")], id="short text"),
    pytest.param([Message(data="x" * 300)], [(OP_TEXT, b"x" * 300)], id="16-bit length"),
    pytest.param([Message(data="y" * 70000)], [(OP_TEXT, b"y" * 70000)], id="64-bit length"),
    pytest.param([Message(data=b"\x01\x02")], [(OP_BINARY, b"\x01\x02")], id="binary"),
    pytest.param(
        [
            Message(data="ab", message_finished=False),
            Ping(payload=b"p"),
            Message(data="cd", message_finished=False),
            Message(data="ef"),
        ],
        [(OP_PING, b"p"), (OP_TEXT, b"abcdef")],
        id="fragmented, a ping between the fragments",
    ),
    pytest.param(
        [Message(data="a"), CloseConnection(code=1001, reason="away")],
        [(OP_TEXT, b"a"), (OP_CLOSE, close_payload(1001, "away"))],
        id="text then close",
    ),
]


@pytest.mark.parametrize(("events", "expected"), SERVER_STREAMS)
def test_the_decoder_reads_what_a_server_writes_in_any_split(
    events: list[object], expected: list[tuple[int, bytes]]
) -> None:
    data = server_bytes(*events)
    assert ServerFrameDecoder().feed(data) == expected
    for cut in sorted({1, 2, 3, 5, 9, 11, len(data) // 2, len(data) - 1}):
        decoder = ServerFrameDecoder()
        got = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert got == expected, cut
    if len(data) < 500:  # one byte at a time
        decoder = ServerFrameDecoder()
        got = [item for i in range(len(data)) for item in decoder.feed(data[i : i + 1])]
        assert got == expected and decoder.idle


def test_the_decoder_is_idle_only_at_a_frame_boundary_outside_a_message() -> None:
    decoder = ServerFrameDecoder()
    assert decoder.idle
    part = server_bytes(Message(data="ab", message_finished=False))
    decoder.feed(part)
    assert not decoder.idle  # inside a fragmented message
    decoder = ServerFrameDecoder()
    decoder.feed(server_bytes(Message(data="abc"))[:3])
    assert not decoder.idle  # inside a frame


BAD_FRAMES = [
    pytest.param(b"\x81\x82\0\0\0\0hi", "masked", id="masked"),
    pytest.param(b"\xc1\x00", "RSV", id="rsv bit"),
    pytest.param(b"\x83\x00", "reserved data opcode", id="opcode 3"),
    pytest.param(b"\x8b\x00", "reserved control opcode", id="opcode 0xb"),
    pytest.param(b"\x80\x00", "continuation", id="continuation without a message"),
    pytest.param(b"\x09\x00", "control", id="fragmented ping"),
    pytest.param(b"\x89\x7e\x00\x7e" + b"p" * 126, "control", id="ping over 125"),
    pytest.param(b"\x01\x01a\x01\x01b", "inside a fragmented", id="message inside a message"),
    pytest.param(b"\x81\x7f" + (1 << 40).to_bytes(8, "big"), "limit", id="huge frame"),
]


@pytest.mark.parametrize(("data", "error"), BAD_FRAMES)
def test_the_decoder_refuses_what_a_server_must_not_send(data: bytes, error: str) -> None:
    with pytest.raises(WireError, match=error):
        ServerFrameDecoder().feed(data)


def test_the_decoder_bounds_fragmented_messages() -> None:
    decoder = ServerFrameDecoder(max_message=10)
    decoder.feed(b"\x01\x06abcdef")
    with pytest.raises(WireError, match="limit"):
        decoder.feed(b"\x00\x06ghijkl")


def test_call_messages_are_twilios_and_the_engine_parses_them() -> None:
    messages = CallMessages(SID, ACCOUNT, CALL, b64_frames(FRAMES))
    parser = MediaStreamParser()
    texts = [
        messages.connected(),
        messages.start(1, {"tenant": "42", "ü": 'q"'}),
        messages.media(2, 1, 0, 0),
        messages.media(3, 2, 20, 2),
        messages.mark(4, "utt-7"),
        messages.stop(5),
    ]
    events = [parser.receive(t.decode()) for t in texts]
    assert events[0] == Connected("Call", "1.0.0")
    assert isinstance(events[1], Start)
    assert events[1].custom_parameters == {"tenant": "42", "ü": 'q"'}
    assert (events[1].stream_sid, events[1].call_sid) == (SID, CALL)
    assert events[2] == Media(2, "inbound", 1, 0, FRAMES[0])
    assert events[3] == Media(3, "inbound", 2, 20, FRAMES[2])
    assert events[4] == Mark(4, "utt-7")
    assert events[5] == Stop(5, ACCOUNT, CALL)
    # Byte for byte what the full emulator sends.
    assert texts[2].decode() == twilio_side.inbound_media_message(2, SID, 1, 0, FRAMES[0])
    assert texts[1].decode() == twilio_side.start_message(
        1, SID, ACCOUNT, CALL, {"tenant": "42", "ü": 'q"'}
    )


@pytest.mark.parametrize("name", ["0.800", "", 'é"\\\n', "x" * 300])
def test_mark_echoes_match_the_full_emulator(name: str) -> None:
    messages = CallMessages(SID, ACCOUNT, CALL, b64_frames(FRAMES))
    assert messages.mark(9, name).decode() == twilio_side.mark_echo_message(9, SID, name)


@pytest.mark.parametrize("sequence", [2, 99, 123456789])
def test_media_frames_are_framed_media_messages(sequence: int) -> None:
    messages = CallMessages(SID, ACCOUNT, CALL, b64_frames(FRAMES))
    text = messages.media(sequence, sequence - 1, 20 * sequence, 1)
    assert messages.media_frame(sequence, sequence - 1, 20 * sequence, 1) == client_frame(text)


def test_a_stream_sid_that_cannot_be_spliced_is_refused() -> None:
    with pytest.raises(ValueError):
        CallMessages('MZ"1', ACCOUNT, CALL, [])


@pytest.mark.parametrize("size", [160, 1, 0, 100])
def test_the_echo_prefix_is_how_the_engine_frames_an_echo(size: int) -> None:
    payload = bytes(range(size))
    (b64,) = b64_frames([payload])
    messages = CallMessages(SID, ACCOUNT, CALL, [b64])
    frame = server_bytes(Message(data=media_message(SID, payload)))
    prefix = messages.echo_prefix(len(b64))
    assert frame == prefix + b64 + b'"}}'


OUTBOUND = [
    pytest.param(media_message(SID, FRAMES[1]), (MEDIA, b64_frames([FRAMES[1]])[0]), id="media"),
    pytest.param(media_message(SID, b""), (MEDIA, b""), id="empty media"),
    pytest.param(mark_message(SID, "1.4000"), (MARK, b"1.4000"), id="mark"),
    pytest.param(mark_message(SID, 'é"'), (MARK, 'é"'.encode()), id="escaped mark"),
    pytest.param(clear_message(SID), (CLEAR, b""), id="clear"),
    pytest.param(
        json.dumps({"media": {"payload": "AAE="}, "event": "media", "streamSid": SID}),
        (MEDIA, b"AAE="),
        id="media, other key order and spaces",
    ),
    pytest.param(
        json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "m"}, "x": 1}),
        (MARK, b"m"),
        id="mark, extra field",
    ),
]


@pytest.mark.parametrize(("message", "expected"), OUTBOUND)
def test_outbound_messages_are_read(message: str, expected: tuple[int, bytes]) -> None:
    assert read_outbound(message.encode(), SID.encode()) == expected


BAD_OUTBOUND = [
    pytest.param(b"{", "invalid JSON", id="not JSON"),
    pytest.param(b"[1]", "not a JSON object", id="array"),
    pytest.param(b'{"event":"hello","streamSid":"%b"}', "unknown outbound event", id="unknown"),
    pytest.param(media_message("MZother", b"a").encode(), "not this one", id="other stream"),
    pytest.param(b'{"event":"clear"}', "not this one", id="no streamSid"),
    pytest.param(b'{"event":"media","streamSid":"%b","media":{}}', "payload", id="no payload"),
    pytest.param(
        b'{"event":"media","streamSid":"%b","media":{"payload":"a"}}', "base64", id="bad b64"
    ),
    pytest.param(b'{"event":"mark","streamSid":"%b","mark":{"name":5}}', "name", id="mark name"),
    pytest.param(b'{"event":"mark","streamSid":"%b","mark":"x"}', "name", id="mark not object"),
]


@pytest.mark.parametrize(("message", "error"), BAD_OUTBOUND)
def test_bad_outbound_messages_are_wire_errors(message: bytes, error: str) -> None:
    if b"%b" in message:
        message = message % SID.encode()
    with pytest.raises(WireError, match=error):
        read_outbound(message, SID.encode())


@pytest.mark.parametrize("size", [0, 1, 2, 3, 160, 161])
def test_payload_size_is_the_decoded_size(size: int) -> None:
    assert payload_size(b64_frames([bytes(size)])[0]) == size


def test_bytes_messages_from_the_fixtures_are_binary() -> None:
    assert ServerFrameDecoder().feed(server_bytes(BytesMessage(data=b"z"))) == [(OP_BINARY, b"z")]
