"""Tests for engine.media.protocol: Media Streams (PROTOCOL.md §1), the server side.

Twilio's side is tested in ``test_twilio_side``; the §1.2 examples are in
``media_stream_examples``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    ProtocolError,
    UnknownEventError,
)
from engine.media.protocol import (
    MAX_MESSAGE_BYTES,
    Mark,
    Media,
    MediaStreamParser,
    ParserStatistics,
    Start,
    Stop,
    clear_message,
    mark_message,
    media_message,
)
from media_stream_examples import (
    ACCOUNT,
    CALL,
    CONNECTED_D,
    EXAMPLE_EVENTS,
    EXAMPLE_TEXTS,
    OTHER_SID,
    SID,
    SILENCE,
    SILENCE_B64,
    dtmf_d,
    dumps,
    mark_d,
    media_d,
    start_d,
    stop_d,
    streaming_parser,
)


def test_examples_parse_in_documented_order() -> None:
    parser = MediaStreamParser()
    assert parser.stream_sid is None
    assert parser.start is None
    events = [parser.receive(text) for text in EXAMPLE_TEXTS]
    assert events == EXAMPLE_EVENTS
    assert parser.stream_sid == SID
    assert parser.start == EXAMPLE_EVENTS[1]
    assert parser.stopped
    assert parser.statistics() == ParserStatistics(
        messages=6,
        media=1,
        gaps=0,
        missing=0,
        chunk_gaps=0,
        duplicates=0,
        out_of_order=0,
        unknown_events=0,
    )


@pytest.mark.parametrize("index", range(len(EXAMPLE_TEXTS)))
def test_each_example_gives_its_event_type_and_values(index: int) -> None:
    parser = MediaStreamParser()
    for text in EXAMPLE_TEXTS[:index]:
        parser.receive(text)
    event = parser.receive(EXAMPLE_TEXTS[index])
    expected = EXAMPLE_EVENTS[index]
    assert type(event) is type(expected)
    assert dataclasses.asdict(event) == dataclasses.asdict(expected)


def test_state_properties_through_a_stream() -> None:
    parser = MediaStreamParser()
    parser.receive(EXAMPLE_TEXTS[0])
    assert (parser.stream_sid, parser.start, parser.stopped) == (None, None, False)
    parser.receive(EXAMPLE_TEXTS[1])
    assert parser.stream_sid == SID
    assert parser.start is not None and parser.start.custom_parameters == {"FirstName": "Jane"}
    assert not parser.stopped
    for text in EXAMPLE_TEXTS[2:]:
        parser.receive(text)
    assert parser.stopped


def test_missing_custom_parameters_means_empty() -> None:
    start = start_d()
    del start["start"]["customParameters"]
    parser = MediaStreamParser()
    parser.receive(dumps(CONNECTED_D))
    event = parser.receive(dumps(start))
    assert isinstance(event, Start)
    assert event.custom_parameters == {}


def test_events_are_frozen_and_slotted() -> None:
    event = Media(2, "inbound", 1, 5, SILENCE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.payload = b""  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_both_tracks_and_outbound_media() -> None:
    start = start_d()
    start["start"]["tracks"] = ["inbound", "outbound"]
    parser = MediaStreamParser()
    parser.receive(dumps(CONNECTED_D))
    event = parser.receive(dumps(start))
    assert isinstance(event, Start)
    assert event.tracks == ("inbound", "outbound")
    # §1.2: one chunk counter across tracks (outbound "1", inbound "2").
    out = media_d(2, 1)
    out["media"]["track"] = "outbound"
    assert parser.receive(dumps(out)) == Media(2, "outbound", 1, 5, SILENCE)
    assert parser.receive(dumps(media_d(3, 2))) == Media(3, "inbound", 2, 5, SILENCE)
    assert parser.statistics().chunk_gaps == 0


# --------------------------------------------------------------------------- malformed input


def with_change(base: dict[str, Any] | str, path: str, value: Any) -> str:
    """``base`` (a dict or JSON) as JSON, with the dotted ``path`` set to ``value``, or deleted."""
    obj = json.loads(base if isinstance(base, str) else json.dumps(base))
    *parents, last = path.split(".")
    target = obj
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return dumps(obj)


DELETE = object()
C = dumps(CONNECTED_D)
S = dumps(start_d())
STREAMING = [C, S]


def big_text() -> str:
    padded = media_d()
    padded["media"]["payload"] = "A" * MAX_MESSAGE_BYTES
    return dumps(padded)


# (id, messages fed first, bad message, exception type, close code, text in the error)
MALFORMED: list[tuple[str, list[str], str | bytes, type[ProtocolError], int, str]] = [
    ("bad JSON", [], '{"event":', ProtocolError, CLOSE_INVALID_PAYLOAD, "invalid JSON"),
    ("JSON array", [], "[1, 2]", ProtocolError, CLOSE_INVALID_PAYLOAD, "JSON object"),
    ("JSON string", STREAMING, '"media"', ProtocolError, CLOSE_INVALID_PAYLOAD, "JSON object"),
    ("binary frame", [], C.encode(), ProtocolError, CLOSE_UNSUPPORTED_DATA, "binary"),
    (
        "unknown event",
        STREAMING,
        dumps({"event": "speak", "sequenceNumber": "2", "streamSid": SID}),
        UnknownEventError,
        CLOSE_UNSUPPORTED_DATA,
        "speak",
    ),
    ("event not a string", STREAMING, '{"event":5}', ProtocolError, CLOSE_INVALID_PAYLOAD, "event"),
    ("event missing", STREAMING, '{"media":{}}', ProtocolError, CLOSE_INVALID_PAYLOAD, "event"),
    (
        "missing streamSid",
        STREAMING,
        with_change(media_d(), "streamSid", DELETE),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "streamSid: missing",
    ),
    (
        "streamSid not a string",
        STREAMING,
        with_change(media_d(), "streamSid", 7),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "streamSid: expected a string",
    ),
    (
        "missing media.payload",
        STREAMING,
        with_change(media_d(), "media.payload", DELETE),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "media.payload",
    ),
    (
        "media not an object",
        STREAMING,
        with_change(media_d(), "media", [1]),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "media: expected an object",
    ),
    (
        "sequenceNumber as int",
        STREAMING,
        with_change(media_d(), "sequenceNumber", 2),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "sequenceNumber",
    ),
    *[
        (
            f"sequenceNumber {bad!r}",
            STREAMING,
            with_change(media_d(), "sequenceNumber", bad),
            ProtocolError,
            CLOSE_INVALID_PAYLOAD,
            "sequenceNumber: expected a string holding a non-negative decimal integer",
        )
        for bad in ["", "-1", "1.5", " 2", "2 ", "+2", "\u0662", "1" * 20, 2.0, None]
    ],
    (
        "chunk as int",
        STREAMING,
        with_change(media_d(), "media.chunk", 1),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "media.chunk",
    ),
    (
        'timestamp "abc"',
        STREAMING,
        with_change(media_d(), "media.timestamp", "abc"),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "media.timestamp",
    ),
    (
        "sampleRate as string",
        [C],
        with_change(start_d(), "start.mediaFormat.sampleRate", "8000"),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "start.mediaFormat.sampleRate: expected an integer",
    ),
    (
        "sampleRate True",
        [C],
        with_change(start_d(), "start.mediaFormat.sampleRate", True),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "start.mediaFormat.sampleRate: expected an integer",
    ),
    (
        "sampleRate 16000",
        [C],
        with_change(start_d(), "start.mediaFormat.sampleRate", 16000),
        ProtocolError,
        CLOSE_UNSUPPORTED_DATA,
        "sampleRate",
    ),
    (
        "channels 2",
        [C],
        with_change(start_d(), "start.mediaFormat.channels", 2),
        ProtocolError,
        CLOSE_UNSUPPORTED_DATA,
        "channels",
    ),
    (
        "channels 1.0",
        [C],
        with_change(start_d(), "start.mediaFormat.channels", 1.0),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "start.mediaFormat.channels: expected an integer",
    ),
    (
        "encoding audio/x-alaw",
        [C],
        with_change(start_d(), "start.mediaFormat.encoding", "audio/x-alaw"),
        ProtocolError,
        CLOSE_UNSUPPORTED_DATA,
        "audio/x-alaw",
    ),
    (
        "mediaFormat missing",
        [C],
        with_change(start_d(), "start.mediaFormat", DELETE),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "start.mediaFormat: missing",
    ),
    (
        "tracks not a list",
        [C],
        with_change(start_d(), "start.tracks", "inbound"),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "start.tracks",
    ),
    (
        "tracks item not a string",
        [C],
        with_change(start_d(), "start.tracks", ["inbound", 1]),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "start.tracks[1]",
    ),
    (
        "customParameters value not a string",
        [C],
        with_change(start_d(), "start.customParameters", {"FirstName": 5}),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "start.customParameters.FirstName: expected a string",
    ),
    (
        "customParameters not an object",
        [C],
        with_change(start_d(), "start.customParameters", ["FirstName"]),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "start.customParameters",
    ),
    (
        "start.callSid missing",
        [C],
        with_change(start_d(), "start.callSid", DELETE),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "start.callSid: missing (expected a string)",
    ),
    (
        "start.callSid not a string",
        [C],
        with_change(start_d(), "start.callSid", 1),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "start.callSid: expected a string",
    ),
    (
        "start streamSid not alphanumeric",
        [C],
        with_change(with_change(start_d(), "streamSid", 'MZ"1'), "start.streamSid", 'MZ"1'),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "streamSid",
    ),
    (
        "start.streamSid differs from top-level",
        [C],
        with_change(start_d(), "start.streamSid", OTHER_SID),
        ProtocolError,
        CLOSE_POLICY_VIOLATION,
        "streamSid mismatch",
    ),
    (
        "connected missing version",
        [],
        with_change(CONNECTED_D, "version", DELETE),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "version: missing",
    ),
    ("media before start", [C], dumps(media_d()), ProtocolError, CLOSE_PROTOCOL_ERROR, "before"),
    ("start before connected", [], S, ProtocolError, CLOSE_PROTOCOL_ERROR, "connected"),
    (
        "unknown event before connected",
        [],
        '{"event":"hello"}',
        ProtocolError,
        CLOSE_PROTOCOL_ERROR,
        "connected",
    ),
    ("second connected", [C], C, ProtocolError, CLOSE_PROTOCOL_ERROR, "second 'connected'"),
    ("second start", STREAMING, S, ProtocolError, CLOSE_PROTOCOL_ERROR, "second 'start'"),
    (
        "media after stop",
        [*STREAMING, dumps(stop_d(2))],
        dumps(media_d(3)),
        ProtocolError,
        CLOSE_PROTOCOL_ERROR,
        "after 'stop'",
    ),
    (
        "stop after stop",
        [*STREAMING, dumps(stop_d(2))],
        dumps(stop_d(3)),
        ProtocolError,
        CLOSE_PROTOCOL_ERROR,
        "after 'stop'",
    ),
    (
        "unknown event after stop",
        [*STREAMING, dumps(stop_d(2))],
        '{"event":"bye"}',
        ProtocolError,
        CLOSE_PROTOCOL_ERROR,
        "after 'stop'",
    ),
    (
        "wrong streamSid on media",
        STREAMING,
        with_change(media_d(), "streamSid", OTHER_SID),
        ProtocolError,
        CLOSE_POLICY_VIOLATION,
        "streamSid mismatch",
    ),
    (
        "wrong streamSid on mark",
        STREAMING,
        with_change(mark_d(2), "streamSid", OTHER_SID),
        ProtocolError,
        CLOSE_POLICY_VIOLATION,
        "streamSid mismatch",
    ),
    ("frame over 64 KiB", STREAMING, big_text(), ProtocolError, CLOSE_MESSAGE_TOO_BIG, "too big"),
    (
        "non-ASCII frame over 64 KiB in UTF-8 only",
        STREAMING,
        dumps({"event": "mark", "mark": {"name": "é" * 40000}}).replace("\\u00e9", "é"),
        ProtocolError,
        CLOSE_MESSAGE_TOO_BIG,
        "too big",
    ),
    (
        "deeply nested JSON",
        STREAMING,
        "[" * 60000,
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "invalid JSON",
    ),
    (
        "bad base64",
        STREAMING,
        with_change(media_d(), "media.payload", "////*w=="),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "media.payload: invalid base64",
    ),
    (
        "base64 missing padding",
        STREAMING,
        with_change(media_d(), "media.payload", "//8"),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "media.payload: invalid base64",
    ),
    (
        "non-ASCII base64",
        STREAMING,
        with_change(media_d(), "media.payload", "é///"),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "media.payload: invalid base64",
    ),
    (
        "payload null",
        STREAMING,
        with_change(media_d(), "media.payload", None),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "media.payload: expected a string, got null",
    ),
    (
        'track "sideways"',
        STREAMING,
        with_change(media_d(), "media.track", "sideways"),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "media.track",
    ),
    (
        "dtmf missing digit",
        STREAMING,
        with_change(dtmf_d(2), "dtmf.digit", DELETE),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "dtmf.digit: missing",
    ),
    (
        "mark name not a string",
        STREAMING,
        with_change(mark_d(2), "mark.name", ["utt-7"]),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "mark.name: expected a string",
    ),
    (
        "stop missing callSid",
        STREAMING,
        with_change(stop_d(2), "stop.callSid", DELETE),
        ProtocolError,
        CLOSE_INVALID_PAYLOAD,
        "stop.callSid: missing",
    ),
]


@pytest.mark.parametrize(
    ("prefix", "message", "error", "close_code", "text"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
def test_malformed_input_is_refused(
    prefix: list[str],
    message: str | bytes,
    error: type[ProtocolError],
    close_code: int,
    text: str,
) -> None:
    parser = MediaStreamParser()
    for good in prefix:
        parser.receive(good)
    before = parser.statistics()
    with pytest.raises(ProtocolError) as excinfo:
        parser.receive(message)
    assert type(excinfo.value) is error
    assert excinfo.value.close_code == close_code
    assert text in str(excinfo.value)
    assert len(str(excinfo.value)) < 300
    if error is ProtocolError:
        assert parser.statistics() == before  # a refused message changes nothing


def test_malformed_table_is_large_enough() -> None:
    assert len(MALFORMED) >= 25


def test_message_of_exactly_the_limit_is_not_too_big() -> None:
    text = dumps({"event": "mark", "sequenceNumber": "2", "streamSid": SID, "mark": {"name": ""}})
    padded = text.replace('"name":""', '"name":"' + "x" * (MAX_MESSAGE_BYTES - len(text)) + '"')
    assert len(padded) == MAX_MESSAGE_BYTES
    event = streaming_parser().receive(padded)
    assert isinstance(event, Mark)


def test_refused_media_leaves_parser_usable() -> None:
    parser = streaming_parser()
    with pytest.raises(ProtocolError):
        parser.receive(with_change(media_d(2), "media.payload", "!!"))
    assert parser.receive(dumps(media_d(2))) == Media(2, "inbound", 1, 5, SILENCE)
    assert parser.statistics().gaps == 0


# --------------------------------------------------------------------------- unknown events


def test_unknown_event_is_counted_and_parser_carries_on() -> None:
    parser = streaming_parser()
    parser.receive(dumps(media_d(2, 1)))
    with pytest.raises(UnknownEventError) as excinfo:
        parser.receive(dumps({"event": "transcript", "sequenceNumber": "3", "streamSid": SID}))
    assert excinfo.value.event == "transcript"
    assert excinfo.value.close_code == CLOSE_UNSUPPORTED_DATA
    # Its sequence number was counted, so the next message is not a gap.
    assert parser.receive(dumps(media_d(4, 2))) == Media(4, "inbound", 2, 5, SILENCE)
    assert parser.receive(dumps(stop_d(5))) == Stop(5, ACCOUNT, CALL)
    assert parser.statistics() == ParserStatistics(
        messages=6,
        media=2,
        gaps=0,
        missing=0,
        chunk_gaps=0,
        duplicates=0,
        out_of_order=0,
        unknown_events=1,
    )


@pytest.mark.parametrize(
    ("unknown", "next_seq", "gaps"),
    [
        ({"event": "x"}, 2, 0),  # no sequenceNumber: nothing to count
        ({"event": "x", "sequenceNumber": "2"}, 3, 0),
        ({"event": "x", "sequenceNumber": 2}, 2, 0),  # invalid: ignored
        ({"event": "x", "sequenceNumber": "4"}, 5, 1),  # its own jump is a gap
        ({"event": "Media", "sequenceNumber": "2"}, 3, 0),  # event names are case-sensitive
    ],
)
def test_unknown_event_sequence_accounting(
    unknown: dict[str, Any], next_seq: int, gaps: int
) -> None:
    parser = streaming_parser()
    with pytest.raises(UnknownEventError):
        parser.receive(dumps(unknown))
    parser.receive(dumps(media_d(next_seq)))
    assert parser.statistics().gaps == gaps
    assert parser.statistics().unknown_events == 1


def test_unknown_event_between_connected_and_start() -> None:
    parser = MediaStreamParser()
    parser.receive(C)
    with pytest.raises(UnknownEventError):
        parser.receive('{"event":"hello","sequenceNumber":"1"}')
    start = with_change(start_d(), "sequenceNumber", "2")
    assert isinstance(parser.receive(start), Start)
    assert parser.statistics().gaps == 0
    assert parser.statistics().unknown_events == 1


def test_huge_unknown_event_name_is_cut_short() -> None:
    parser = streaming_parser()
    with pytest.raises(UnknownEventError) as excinfo:
        parser.receive(dumps({"event": "y" * 5000}))
    assert len(excinfo.value.event) <= 100


# --------------------------------------------------------------------------- gaps


@pytest.mark.parametrize(
    ("sequence", "anomalies"),
    [
        # (gaps, duplicates, out of order): each message still counts and is returned.
        ([2, 3, 3, 4], (0, 1, 0)),
        ([2, 4, 3, 5], (1, 0, 1)),  # 3 arrives late: after the jump to 4
        ([5, 2], (1, 0, 1)),
        ([2, 2, 2], (0, 2, 0)),
        ([2, 1, 3], (0, 0, 1)),  # back to start's own number
        ([10, 9, 8, 11], (1, 0, 2)),
    ],
)
def test_sequence_numbers_that_skip_repeat_or_go_back_are_counted_not_refused(
    sequence: list[int], anomalies: tuple[int, int, int]
) -> None:
    parser = streaming_parser()
    for chunk, seq in enumerate(sequence, start=1):
        assert parser.receive(dumps(media_d(seq, chunk))) == Media(
            seq, "inbound", chunk, 5, SILENCE
        )
    parser.receive(dumps(dtmf_d(max(sequence) - 1)))  # any event type may come back
    stats = parser.statistics()
    gaps, duplicates, out_of_order = anomalies
    assert (stats.gaps, stats.duplicates, stats.out_of_order - 1) == anomalies
    assert stats.sequence_anomalies == gaps + duplicates + out_of_order + 1
    assert stats.media == len(sequence)


@pytest.mark.parametrize(
    ("sequence", "gaps", "missing"),
    [
        ([2, 3, 4, 5], 0, 0),
        ([2, 4], 1, 1),
        ([3], 1, 1),
        ([2, 5, 6, 10], 2, 5),
        ([100], 1, 98),
        ([2, 3, 13, 14, 15, 17], 2, 10),
        ([], 0, 0),
    ],
)
def test_sequence_gaps(sequence: list[int], gaps: int, missing: int) -> None:
    parser = streaming_parser()
    for chunk, seq in enumerate(sequence, start=1):
        assert parser.receive(dumps(media_d(seq, chunk))) == Media(
            seq, "inbound", chunk, 5, SILENCE
        )
    stats = parser.statistics()
    assert (stats.gaps, stats.missing, stats.chunk_gaps) == (gaps, missing, 0)
    assert stats.media == len(sequence)


@pytest.mark.parametrize(
    ("chunks", "chunk_gaps"),
    [
        ([1, 2, 3], 0),
        ([1, 3], 1),
        ([1, 5, 6, 9], 2),
        ([2, 3], 0),  # the first chunk is taken as it comes
        ([1, 1, 2], 0),  # a repeated or earlier chunk is not a gap, and not an error
        ([3, 1, 2], 0),
    ],
)
def test_chunk_gaps(chunks: list[int], chunk_gaps: int) -> None:
    parser = streaming_parser()
    for seq, chunk in enumerate(chunks, start=2):
        parser.receive(dumps(media_d(seq, chunk)))
    stats = parser.statistics()
    assert (stats.gaps, stats.chunk_gaps) == (0, chunk_gaps)


def test_gaps_span_all_event_types() -> None:
    parser = streaming_parser()
    parser.receive(dumps(media_d(2, 1)))
    parser.receive(dumps(dtmf_d(4)))
    parser.receive(dumps(mark_d(5)))
    parser.receive(dumps(media_d(8, 2)))
    parser.receive(dumps(stop_d(9)))
    stats = parser.statistics()
    assert (stats.gaps, stats.missing, stats.messages) == (2, 3, 7)


def test_start_sequence_number_is_recorded_not_enforced() -> None:
    parser = MediaStreamParser()
    parser.receive(C)
    start = parser.receive(with_change(start_d(), "sequenceNumber", "7"))
    assert isinstance(start, Start) and start.sequence_number == 7
    parser.receive(dumps(media_d(8)))
    assert parser.statistics().gaps == 0


@given(steps=st.lists(st.integers(min_value=1, max_value=50), max_size=30))
def test_gap_counts_property(steps: list[int]) -> None:
    parser = streaming_parser()
    seq = 1
    for chunk, step in enumerate(steps, start=1):
        seq += step
        parser.receive(dumps(media_d(seq, chunk, 0)))
    stats = parser.statistics()
    assert stats.gaps == sum(1 for step in steps if step > 1)
    assert stats.missing == sum(step - 1 for step in steps)


# --------------------------------------------------------------------------- robustness

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    event=st.sampled_from(["media", "start", "dtmf", "mark", "stop", "connected", "other"]),
    body=st.dictionaries(
        st.sampled_from(["sequenceNumber", "streamSid", "media", "dtmf", "mark", "stop", "start"]),
        JSON_VALUES,
    ),
)
def test_arbitrary_json_raises_only_protocol_errors(event: str, body: dict[str, Any]) -> None:
    parser = streaming_parser()
    with contextlib.suppress(ProtocolError):
        parser.receive(dumps({"event": event, **body}))


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_arbitrary_frames_raise_only_protocol_errors(message: str | bytes) -> None:
    with contextlib.suppress(ProtocolError):
        streaming_parser().receive(message)


# --------------------------------------------------------------------------- server → Twilio


def test_server_builders_write_exactly_the_documented_json() -> None:
    assert json.loads(media_message(SID, SILENCE)) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": SILENCE_B64},
    }
    assert json.loads(mark_message(SID, "utt-7")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "utt-7"},
    }
    assert json.loads(clear_message(SID)) == {"event": "clear", "streamSid": SID}


def test_media_message_is_compact_text() -> None:
    expected = '{"event":"media","streamSid":"' + SID + '","media":{"payload":"' + SILENCE_B64
    assert media_message(SID, SILENCE) == expected + '"}}'
    assert media_message(SID, bytearray(SILENCE)) == media_message(SID, memoryview(SILENCE))


def test_media_message_escapes_a_non_alphanumeric_sid() -> None:
    assert json.loads(media_message('M"Z\\', b"\x01"))["streamSid"] == 'M"Z\\'


@pytest.mark.parametrize(
    ("stream_sid", "name"),
    [
        (SID, "0.800"),
        (SID, ""),
        (SID, 'quote " backslash \\ newline \n nul \x00'),
        (SID, "é ✓ \u2028 \ud83d"),
        ("MZ not alnum", "n"),
    ],
)
def test_mark_message_is_exactly_compact_json(stream_sid: str, name: str) -> None:
    expected = json.dumps(
        {"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}, separators=(",", ":")
    )
    assert mark_message(stream_sid, name) == expected
