"""Property-based fuzzing of the Media Streams parsers: ``engine.media.protocol`` (the server
side), ``engine.testing.twilio_side.parse_outbound`` (Twilio's side) and ``engine.media._fields``.

Whatever arrives — arbitrary text or bytes, arbitrary JSON, valid messages with a field removed,
retyped, oversized, badly encoded or nested deep — nothing but
:class:`~engine.errors.ProtocolError` may come out, a refused message must leave the parser as it
was, and valid generated streams must parse to exactly the events and counters they describe.
"""

from __future__ import annotations

import copy
import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from engine.errors import ProtocolError, UnknownEventError
from engine.media import _fields
from engine.media.protocol import (
    MAX_MESSAGE_BYTES,
    Connected,
    Dtmf,
    InboundEvent,
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
from engine.testing.twilio_side import (
    OutboundEvent,
    OutClear,
    OutMark,
    OutMedia,
    dtmf_message,
    inbound_media_message,
    mark_echo_message,
    parse_outbound,
    start_message,
    stop_message,
)

pytestmark = pytest.mark.fuzz

CLOSE_CODES = {1002, 1003, 1007, 1008, 1009}
"""Every close code a ProtocolError of these parsers may carry."""

# --------------------------------------------------------------------------- strategies

SIDS = st.text(string.ascii_letters + string.digits, min_size=1, max_size=34)
TEXT = st.text(max_size=24)
"""Any Unicode text but lone surrogates: what a JSON encoder is happy to write."""
ANY_TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=80)
"""Any Python ``str``, lone surrogates included (a WebSocket library would never deliver
those, but ``receive`` takes any ``str``)."""
COUNTERS = st.integers(min_value=0, max_value=10**19 - 1)
PAYLOADS = st.binary(max_size=320)

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()  # NaN and ±Infinity too: Python's json writes and reads them
    | ANY_TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)

ODD_COUNTERS: st.SearchStrategy[Any] = st.sampled_from(
    [
        "",
        " 1",
        "1 ",
        "+1",
        "-1",
        "1.0",
        "1e3",
        "0x1",
        "1_000",
        "١٢",  # Arabic-Indic digits: str.isdigit() is True, but they are not ASCII
        "²",  # superscript two: isdigit() True, int() refuses it
        "１",  # fullwidth one
        "9" * 19,
        "9" * 20,
        "1" * 4301,  # past CPython's int() digit limit
        "00",
        1,
        0,
        -1,
        1.0,
        True,
        None,
        [],
        {},
    ]
)
ODD_BASE64 = st.one_of(
    st.text(string.ascii_letters + string.digits + "+/=-_ \n\t*é", max_size=40),
    st.sampled_from(["=", "==", "A", "AA", "AAA", "A===", "AA=A", "////\n", "/w", "/w=", "é", ""]),
)
ODD_STRINGS = st.sampled_from(
    [
        "",
        "\x00",
        "\ud800",
        "é",
        "ＭＺ１２",  # fullwidth letters and digits: isalnum() but not ASCII
        "MZ 12",
        "a" * (MAX_MESSAGE_BYTES + 1),
        "€" * (MAX_MESSAGE_BYTES // 3 + 1),  # few enough characters, too many UTF-8 bytes
        "inbound\x00",
        "INBOUND",
        "audio/x-mulaw ",
    ]
)
# Raw JSON text spliced in where a value was: not expressible as a Python value that json.dumps
# would write (or too slow to build as one).
RAW_JSON = st.one_of(
    st.sampled_from(["1e999", "-1e999", "NaN", "-Infinity", "-0", "1.5e-400", "8000.0", "8e3"]),
    st.integers(min_value=20, max_value=6000).map(lambda n: "9" * n),
    st.sampled_from([10, 100, 990, 1000, 3000, 20000, 32000]).map(lambda n: "[" * n + "]" * n),
    st.sampled_from([10, 1000, 20000]).map(lambda n: '{"a":' * n + "1" + "}" * n),
)
_SENTINEL = "\uf8ffSENTINEL\uf8ff"


# --------------------------------------------------------------------------- valid streams


@dataclass
class Stream:
    """A valid Media Streams conversation from Twilio: texts, their dicts, the expected events."""

    texts: list[str]
    dicts: list[dict[str, Any]]
    events: list[InboundEvent]
    statistics: ParserStatistics
    stopped: bool


def _dump(draw: st.DrawFn, message: dict[str, Any]) -> str:
    """JSON text for ``message`` in one of the spellings a peer may use."""
    return json.dumps(
        message,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
        indent=draw(st.sampled_from([None, 1])),
    )


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    """A valid stream: connected, start, media/dtmf/mark with sequence and chunk gaps, maybe stop.

    Each message is written either by ``engine.testing.twilio_side``'s builders or by ``json.dumps``
    in a random style (with an extra field or two, which the parser must ignore).
    """
    texts: list[str] = []
    dicts: list[dict[str, Any]] = []
    events: list[InboundEvent] = []

    def add(message: dict[str, Any], event: InboundEvent, built: str | None = None) -> None:
        if draw(st.booleans()):
            message = {**message, **draw(st.dictionaries(st.sampled_from(["x", "extra"]), TEXT))}
            built = None
        dicts.append(message)
        texts.append(built if built is not None and draw(st.booleans()) else _dump(draw, message))
        events.append(event)

    protocol, version = draw(TEXT), draw(TEXT)
    add(
        {"event": "connected", "protocol": protocol, "version": version},
        Connected(protocol, version),
    )

    sid, account, call = draw(SIDS), draw(TEXT), draw(TEXT)
    tracks = draw(st.lists(TEXT, max_size=3))
    params = draw(st.dictionaries(TEXT, TEXT, max_size=4))
    seq = draw(st.integers(min_value=0, max_value=10**18))
    start_body: dict[str, Any] = {
        "streamSid": sid,
        "accountSid": account,
        "callSid": call,
        "tracks": tracks,
        "customParameters": params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    if not params and draw(st.booleans()):
        del start_body["customParameters"]  # absent means empty
    add(
        {"event": "start", "sequenceNumber": str(seq), "streamSid": sid, "start": start_body},
        Start(seq, sid, account, call, tuple(tracks), params, "audio/x-mulaw", 8000, 1),
        start_message(seq, sid, account, call, params, tracks),
    )

    gaps = missing = chunk_gaps = media_count = 0
    last_chunk = -1
    for kind in draw(st.lists(st.sampled_from(["media", "dtmf", "mark"]), max_size=8)):
        step = draw(st.integers(min_value=1, max_value=3) | st.integers(1, 10**6))
        gaps += step > 1
        missing += step - 1
        seq += step
        head = {"event": kind, "sequenceNumber": str(seq), "streamSid": sid}
        if kind == "media":
            track = draw(st.sampled_from(["inbound", "outbound"]))
            chunk, timestamp, payload = draw(COUNTERS), draw(COUNTERS), draw(PAYLOADS)
            chunk_gaps += last_chunk >= 0 and chunk > last_chunk + 1
            last_chunk = chunk
            media_count += 1
            media = {
                "track": track,
                "chunk": str(chunk),
                "timestamp": str(timestamp),
                "payload": _fields.b64text(payload),
            }
            add(
                {**head, "media": media},
                Media(seq, track, chunk, timestamp, payload),
                inbound_media_message(seq, sid, chunk, timestamp, payload, track),
            )
        elif kind == "dtmf":
            track = draw(st.just("inbound_track") | TEXT)
            digit = draw(st.sampled_from("0123456789*#") | TEXT)
            built = dtmf_message(seq, sid, digit) if track == "inbound_track" else None
            add({**head, "dtmf": {"track": track, "digit": digit}}, Dtmf(seq, track, digit), built)
        else:
            name = draw(TEXT)
            add(
                {**head, "mark": {"name": name}}, Mark(seq, name), mark_echo_message(seq, sid, name)
            )

    stopped = draw(st.booleans())
    if stopped:
        step = draw(st.integers(min_value=1, max_value=3))
        gaps += step > 1
        missing += step - 1
        seq += step
        stop_account, stop_call = draw(TEXT), draw(TEXT)
        add(
            {
                "event": "stop",
                "sequenceNumber": str(seq),
                "streamSid": sid,
                "stop": {"accountSid": stop_account, "callSid": stop_call},
            },
            Stop(seq, stop_account, stop_call),
            stop_message(seq, sid, stop_account, stop_call),
        )

    statistics = ParserStatistics(
        messages=len(events),
        media=media_count,
        gaps=gaps,
        missing=missing,
        chunk_gaps=chunk_gaps,
        duplicates=0,
        out_of_order=0,
        unknown_events=0,
    )
    return Stream(texts, dicts, events, statistics, stopped)


@given(streams())
def test_valid_streams_parse_to_their_events_and_counters(stream: Stream) -> None:
    parser = MediaStreamParser()
    events = [parser.receive(text) for text in stream.texts]
    assert events == stream.events
    assert parser.statistics() == stream.statistics
    assert parser.start == stream.events[1]
    assert parser.stream_sid == stream.dicts[1]["streamSid"]
    assert parser.stopped == stream.stopped


# --------------------------------------------------------------------------- mutations


def _slots(value: Any, found: list[tuple[dict[str, Any] | list[Any], Any]]) -> None:
    """Collect every (container, key-or-index) in a decoded JSON value, depth first."""
    if isinstance(value, dict):
        for key in value:
            found.append((value, key))
            _slots(value[key], found)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((value, index))
            _slots(item, found)


def mutate(data: st.DataObject, message: dict[str, Any], text: str) -> str:
    """One mutation of a valid message: a field removed, retyped, renamed, oversized, given odd
    counters, bad base64 or non-ASCII text, replaced by deep nesting or a huge number; or the
    text itself cut, spliced or with a key duplicated."""
    kind = data.draw(
        st.sampled_from(["delete", "replace", "rename", "add", "odd", "raw", "text", "duplicate"]),
        label="mutation",
    )
    if kind == "text":
        position = data.draw(st.integers(0, len(text)), label="position")
        how = data.draw(st.sampled_from(["cut", "insert", "drop", "swap"]), label="how")
        if how == "cut":
            return text[:position]
        if how == "insert":
            return text[:position] + data.draw(ANY_TEXT, label="inserted") + text[position:]
        if how == "drop":
            return text[:position] + text[position + 1 :]
        return text[position:] + text[:position]
    if kind == "duplicate":  # JSON with a repeated key: the last one wins
        key = data.draw(st.sampled_from(sorted(message)), label="key")
        extra = json.dumps(data.draw(JSON_VALUES, label="value"))
        return "{" + json.dumps(key) + ":" + extra + "," + text.lstrip()[1:]

    mutated = copy.deepcopy(message)
    slots: list[tuple[dict[str, Any] | list[Any], Any]] = []
    _slots(mutated, slots)
    container, key = data.draw(st.sampled_from(slots), label="slot")
    raw: str | None = None
    if kind == "delete":
        if isinstance(container, dict):
            del container[key]
        else:
            container.pop(key)
    elif kind == "replace":
        container[key] = data.draw(JSON_VALUES, label="value")
    elif kind == "rename":
        if not isinstance(container, dict):
            return text[:-1]  # a list item has no name to change: cut the closing brace
        value = container.pop(key)
        new_key = data.draw(
            st.sampled_from([key.upper(), key.lower(), key + " ", "\ufeff" + key]) | ANY_TEXT,
            label="new key",
        )
        container[new_key] = value
    elif kind == "add":
        target = data.draw(
            st.sampled_from([mutated, *(c for c, _ in slots if isinstance(c, dict))])
        )
        target[data.draw(ANY_TEXT, label="new key")] = data.draw(JSON_VALUES, label="value")
    elif kind == "odd":
        container[key] = data.draw(ODD_COUNTERS | ODD_BASE64 | ODD_STRINGS, label="odd")
    else:
        container[key] = _SENTINEL
        raw = data.draw(RAW_JSON, label="raw")
    result = json.dumps(mutated, ensure_ascii=data.draw(st.booleans(), label="ascii"))
    if raw is not None:
        result = result.replace(json.dumps(_SENTINEL), raw, 1)
    return result


def _check_refusal(exc: ProtocolError) -> None:
    """A refusal carries one of the documented close codes and a message."""
    assert exc.close_code in CLOSE_CODES, exc.close_code
    assert str(exc)


@given(stream=streams(), data=st.data())
def test_mutated_messages_are_refused_cleanly_or_parsed(
    stream: Stream, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(stream.texts) - 1), label="index")
    mutated = mutate(data, stream.dicts[index], stream.texts[index])
    note(f"mutated: {mutated[:500]!r}")
    parser = MediaStreamParser()
    for text in stream.texts[:index]:
        parser.receive(text)
    before = parser.statistics()
    try:
        event = parser.receive(mutated)
    except UnknownEventError as exc:
        assert exc.close_code == 1003
        assert parser.statistics().unknown_events == before.unknown_events + 1
        return
    except ProtocolError as exc:
        _check_refusal(exc)
        # A refused message changes nothing: the original still parses, to the same event.
        assert parser.statistics() == before
        assert parser.receive(stream.texts[index]) == stream.events[index]
        return
    # Still a valid message (an extra field, an equally valid value): an event of its kind.
    decoded = json.loads(mutated)
    assert type(event).__name__.lower() == decoded["event"]
    assert parser.statistics().messages == before.messages + 1


# --------------------------------------------------------------------------- garbage


GARBAGE = st.one_of(
    ANY_TEXT,
    st.binary(max_size=200),
    JSON_VALUES.map(json.dumps),
    st.fixed_dictionaries(
        {"event": st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop"])},
        optional={
            key: JSON_VALUES | ODD_COUNTERS | ODD_STRINGS
            for key in ("sequenceNumber", "streamSid", "media", "dtmf", "mark", "stop", "start")
        },
    ).map(json.dumps),
    RAW_JSON,
)


@given(stream=streams(), garbage=st.lists(st.tuples(st.integers(0, 20), GARBAGE), max_size=6))
def test_garbage_between_valid_messages_changes_nothing(
    stream: Stream, garbage: list[tuple[int, str | bytes]]
) -> None:
    """Arbitrary frames, in any state, raise only ProtocolError and leave the parser as it was:
    the valid stream around them still yields exactly its events."""
    parser = MediaStreamParser()
    by_position: dict[int, list[str | bytes]] = {p: [] for p in range(len(stream.texts) + 1)}
    for position, frame in garbage:
        by_position[min(position, len(stream.texts))].append(frame)
    events: list[InboundEvent] = []
    for position in range(len(stream.texts) + 1):
        for frame in by_position[position]:
            before = parser.statistics()
            try:
                event = parser.receive(frame)
            except UnknownEventError:
                return  # counted and possibly advancing the sequence: the stream ends here
            except ProtocolError as exc:
                _check_refusal(exc)
                assert parser.statistics() == before
            else:
                note(f"garbage accepted as {event!r}")
                return  # a frame that happened to be valid: the rest no longer lines up
        if position < len(stream.texts):
            events.append(parser.receive(stream.texts[position]))
    assert events == stream.events
    assert parser.statistics() == stream.statistics


@given(st.lists(GARBAGE, min_size=1, max_size=4))
def test_arbitrary_frames_on_a_fresh_parser(frames: list[str | bytes]) -> None:
    parser = MediaStreamParser()
    for frame in frames:
        try:
            event = parser.receive(frame)
        except ProtocolError as exc:
            _check_refusal(exc)
        else:
            assert isinstance(event, Connected | Start | Media | Dtmf | Mark | Stop)


# --------------------------------------------------------------------------- server → Twilio


def _outbound(draw: st.DrawFn) -> tuple[dict[str, Any], str, OutboundEvent]:
    sid = draw(SIDS)
    kind = draw(st.sampled_from(["media", "mark", "clear"]))
    if kind == "media":
        payload = draw(PAYLOADS)
        message = {
            "event": "media",
            "streamSid": sid,
            "media": {"payload": _fields.b64text(payload)},
        }
        return message, media_message(sid, payload), OutMedia(sid, payload)
    if kind == "mark":
        name = draw(TEXT)
        message = {"event": "mark", "streamSid": sid, "mark": {"name": name}}
        return message, mark_message(sid, name), OutMark(sid, name)
    return {"event": "clear", "streamSid": sid}, clear_message(sid), OutClear(sid)


outbound_messages = st.composite(_outbound)


@given(outbound_messages())
def test_server_messages_round_trip_through_parse_outbound(
    case: tuple[dict[str, Any], str, OutboundEvent],
) -> None:
    message, text, event = case
    assert json.loads(text) == message
    assert parse_outbound(text) == event


@given(sid=ANY_TEXT.filter(lambda s: not _fields.is_sid(s)), payload=PAYLOADS, name=TEXT)
def test_server_messages_with_a_bad_sid_are_refused(sid: str, payload: bytes, name: str) -> None:
    for text in (media_message(sid, payload), mark_message(sid, name), clear_message(sid)):
        with pytest.raises(ProtocolError) as excinfo:
            parse_outbound(text)
        assert excinfo.value.close_code == 1007


@given(case=outbound_messages(), data=st.data())
def test_mutated_server_messages_are_refused_cleanly_or_parsed(
    case: tuple[dict[str, Any], str, OutboundEvent], data: st.DataObject
) -> None:
    message, text, _ = case
    mutated = mutate(data, message, text)
    note(f"mutated: {mutated[:500]!r}")
    try:
        event = parse_outbound(mutated)
    except ProtocolError as exc:
        assert not isinstance(exc, UnknownEventError)
        _check_refusal(exc)
    else:
        decoded = json.loads(mutated)
        assert type(event).__name__.lower() == "out" + decoded["event"]
        assert event.stream_sid == decoded["streamSid"]


OUTBOUND_GARBAGE = st.fixed_dictionaries(
    {"event": st.sampled_from(["media", "mark", "clear"]) | ANY_TEXT},
    optional={
        "streamSid": SIDS | ANY_TEXT | ODD_STRINGS | JSON_VALUES,
        "media": st.fixed_dictionaries({}, optional={"payload": ODD_BASE64 | JSON_VALUES})
        | JSON_VALUES,
        "mark": st.fixed_dictionaries({}, optional={"name": JSON_VALUES}) | JSON_VALUES,
    },
).map(json.dumps)


@given(st.one_of(GARBAGE, OUTBOUND_GARBAGE))
def test_arbitrary_frames_to_parse_outbound(frame: str | bytes) -> None:
    try:
        event = parse_outbound(frame)
    except ProtocolError as exc:
        _check_refusal(exc)
    else:
        assert isinstance(event, OutMedia | OutMark | OutClear)


# --------------------------------------------------------------------------- field checks


_FIELD_CHECKS: list[tuple[str, Callable[[dict[str, Any], str, str], object]]] = [
    ("str", _fields.str_field),
    ("uint", _fields.uint_field),
    ("int", _fields.int_field),
    ("object", _fields.object_field),
]


@given(
    value=JSON_VALUES | ODD_COUNTERS | ODD_STRINGS | COUNTERS.map(str),
    present=st.booleans(),
    text=ANY_TEXT | ODD_BASE64,
    payload=PAYLOADS,
)
def test_field_checks_return_the_value_or_a_1007(
    value: Any, present: bool, text: str, payload: bytes
) -> None:
    obj = {"f": value} if present else {}
    for name, check in _FIELD_CHECKS:
        try:
            result = check(obj, "f", "x.f")
        except ProtocolError as exc:
            assert exc.close_code == 1007
            assert str(exc).startswith("x.f: ")
            continue
        assert present
        if name == "uint":
            assert type(value) is str and value.isascii() and value.isdigit() and len(value) <= 19
            assert result == int(value)
        else:
            expected = {"str": str, "int": int, "object": dict}[name]
            assert type(value) is expected and result is value
    assert _fields.is_counter(text) == (text.isascii() and text.isdigit() and 1 <= len(text) <= 19)
    try:
        decoded = _fields.decode_base64(text, "p")
    except ProtocolError as exc:
        assert exc.close_code == 1007
    else:
        assert set(text) <= set(string.ascii_letters + string.digits + "+/=")
        assert len(decoded) == len(text.rstrip("=")) * 3 // 4
    assert _fields.decode_base64(_fields.b64text(payload), "p") == payload
    assert len(_fields.short(text)) <= len(repr(text[:40])) + 1
