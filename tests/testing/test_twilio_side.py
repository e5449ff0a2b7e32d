"""Tests for engine.testing.twilio_side: Twilio's side of Media Streams (PROTOCOL.md §1).

The messages Twilio sends are checked against §1.2 and round-tripped through the server's
parser; what the server sends is parsed as the emulator receives it.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import CLOSE_INVALID_PAYLOAD, CLOSE_UNSUPPORTED_DATA, ProtocolError
from engine.media.protocol import (
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaStreamParser,
    Start,
    Stop,
    clear_message,
    mark_message,
    media_message,
)
from engine.testing.twilio_side import (
    OutClear,
    OutMark,
    OutMedia,
    connected_message,
    dtmf_message,
    inbound_media_message,
    mark_echo_message,
    parse_outbound,
    start_message,
    stop_message,
)
from media_stream_examples import (
    ACCOUNT,
    CALL,
    CONNECTED_D,
    EXAMPLE_EVENTS,
    SID,
    SILENCE,
    dtmf_d,
    dumps,
    mark_d,
    media_d,
    start_d,
    stop_d,
    streaming_parser,
)

# --------------------------------------------------------------------------- Twilio-side builders


def test_twilio_builders_write_exactly_the_documented_json() -> None:
    assert json.loads(connected_message()) == CONNECTED_D
    assert json.loads(start_message(1, SID, ACCOUNT, CALL, {"FirstName": "Jane"})) == start_d()
    assert json.loads(inbound_media_message(2, SID, 1, 5, SILENCE)) == media_d()
    assert json.loads(dtmf_message(3, SID, "1")) == dtmf_d()
    assert json.loads(mark_echo_message(4, SID, "utt-7")) == mark_d()
    assert json.loads(stop_message(5, SID, ACCOUNT, CALL)) == stop_d()


def test_twilio_builders_round_trip_through_the_parser() -> None:
    texts = [
        connected_message(),
        start_message(1, SID, ACCOUNT, CALL, {"FirstName": "Jane"}),
        inbound_media_message(2, SID, 1, 5, SILENCE),
        dtmf_message(3, SID, "1"),
        mark_echo_message(4, SID, "utt-7"),
        stop_message(5, SID, ACCOUNT, CALL),
    ]
    parser = MediaStreamParser()
    assert [parser.receive(text) for text in texts] == EXAMPLE_EVENTS


def test_inbound_media_builder_escapes_odd_sids_and_tracks() -> None:
    text = inbound_media_message(2, 'MZ"x', 1, 0, b"\x00", track="out\\bound")
    assert json.loads(text)["streamSid"] == 'MZ"x'
    assert json.loads(text)["media"]["track"] == "out\\bound"


@given(
    first_seq=st.integers(min_value=0, max_value=10**9),
    payloads=st.lists(st.binary(max_size=400), max_size=20),
    params=st.dictionaries(st.text(max_size=20), st.text(max_size=30), max_size=5),
    mark_name=st.text(max_size=40),
    digit=st.sampled_from(list("0123456789*#")),
)
def test_builders_round_trip_property(
    first_seq: int, payloads: list[bytes], params: dict[str, str], mark_name: str, digit: str
) -> None:
    parser = MediaStreamParser()
    assert parser.receive(connected_message()) == Connected("Call", "1.0.0")
    start = parser.receive(start_message(first_seq, SID, ACCOUNT, CALL, params))
    assert isinstance(start, Start)
    assert (start.sequence_number, start.custom_parameters) == (first_seq, params)
    seq = first_seq
    for index, payload in enumerate(payloads):
        seq += 1
        text = inbound_media_message(seq, SID, index + 1, 20 * index, payload)
        assert parser.receive(text) == Media(seq, "inbound", index + 1, 20 * index, payload)
    assert parser.receive(dtmf_message(seq + 1, SID, digit)) == Dtmf(
        seq + 1, "inbound_track", digit
    )
    assert parser.receive(mark_echo_message(seq + 2, SID, mark_name)) == Mark(seq + 2, mark_name)
    assert parser.receive(stop_message(seq + 3, SID, ACCOUNT, CALL)) == Stop(seq + 3, ACCOUNT, CALL)
    stats = parser.statistics()
    assert (stats.messages, stats.media, stats.gaps, stats.missing) == (
        len(payloads) + 5,
        len(payloads),
        0,
        0,
    )


# ------------------------------------------------------------- server → Twilio, as received


@pytest.mark.parametrize(
    "name",
    ["utt-7", 'say "hi"', "naïve ☎ 🎉", "back\\slash", "", "line\nbreak", "</script>", "\x00"],
)
def test_mark_names_survive(name: str) -> None:
    text = mark_message(SID, name)
    assert json.loads(text)["mark"]["name"] == name
    assert parse_outbound(text) == OutMark(SID, name)
    # ... and Twilio's echo of it comes back through the parser unchanged.
    assert streaming_parser().receive(mark_echo_message(2, SID, name)) == Mark(2, name)


@given(payload=st.binary(max_size=2000))
def test_outbound_round_trip_property(payload: bytes) -> None:
    assert parse_outbound(media_message(SID, payload)) == OutMedia(SID, payload)


def test_outbound_round_trip() -> None:
    assert parse_outbound(media_message(SID, SILENCE)) == OutMedia(SID, SILENCE)
    assert parse_outbound(mark_message(SID, "utt-7")) == OutMark(SID, "utt-7")
    assert parse_outbound(clear_message(SID)) == OutClear(SID)


@pytest.mark.parametrize(
    ("message", "close_code", "text"),
    [
        pytest.param(clear_message(SID).encode(), CLOSE_UNSUPPORTED_DATA, "binary", id="binary"),
        pytest.param("{", CLOSE_INVALID_PAYLOAD, "invalid JSON", id="bad JSON"),
        pytest.param("[]", CLOSE_INVALID_PAYLOAD, "JSON object", id="array"),
        pytest.param('{"streamSid":"MZ1"}', CLOSE_INVALID_PAYLOAD, "event", id="no event"),
        pytest.param('{"event":1}', CLOSE_INVALID_PAYLOAD, "event", id="event not a string"),
        pytest.param(dumps(dtmf_d()), CLOSE_UNSUPPORTED_DATA, "dtmf", id="dtmf from server"),
        pytest.param('{"event":"Clear"}', CLOSE_UNSUPPORTED_DATA, "Clear", id="unknown event"),
        pytest.param('{"event":"clear"}', CLOSE_INVALID_PAYLOAD, "streamSid", id="clear no sid"),
        pytest.param(
            '{"event":"clear","streamSid":"MZ 1"}', CLOSE_INVALID_PAYLOAD, "streamSid", id="bad sid"
        ),
        pytest.param(
            '{"event":"media","streamSid":"MZ1"}', CLOSE_INVALID_PAYLOAD, "media", id="no media"
        ),
        pytest.param(
            '{"event":"media","streamSid":"MZ1","media":{"payload":"a"}}',
            CLOSE_INVALID_PAYLOAD,
            "media.payload: invalid base64",
            id="bad base64",
        ),
        pytest.param(
            '{"event":"media","streamSid":"MZ1","media":{"payload":5}}',
            CLOSE_INVALID_PAYLOAD,
            "media.payload",
            id="payload not a string",
        ),
        pytest.param(
            '{"event":"mark","streamSid":"MZ1","mark":{}}',
            CLOSE_INVALID_PAYLOAD,
            "mark.name: missing",
            id="mark no name",
        ),
        pytest.param(
            '{"event":"mark","streamSid":"MZ1","mark":"utt"}',
            CLOSE_INVALID_PAYLOAD,
            "mark: expected an object",
            id="mark not an object",
        ),
    ],
)
def test_parse_outbound_refuses_malformed(message: str | bytes, close_code: int, text: str) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        parse_outbound(message)
    assert type(excinfo.value) is ProtocolError  # unknown events are errors here
    assert excinfo.value.close_code == close_code
    assert text in str(excinfo.value)
