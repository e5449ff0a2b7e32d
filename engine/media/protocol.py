"""The Twilio Media Streams protocol (PROTOCOL.md §1), server side, sans-IO.

This module is pure, in the style of h11/wsproto: it does no I/O, knows nothing of
trio or sockets, and keeps no clocks. Text goes in and events come out; events go in
and text comes out.

* :class:`MediaStreamParser` turns each WebSocket message Twilio sends into one
  :data:`InboundEvent` (:class:`Connected`, :class:`Start`, :class:`Media`,
  :class:`Dtmf`, :class:`Mark`, :class:`Stop`). It checks field presence and types
  exactly as §1.1/§1.2 state them, enforces the message order
  (``connected`` → ``start`` → … → ``stop``), the ``streamSid`` and the media format,
  and counts sequence-number and chunk gaps. Every violation raises
  :class:`~engine.errors.ProtocolError` carrying the WebSocket close code to use; an
  unknown ``event`` raises :class:`~engine.errors.UnknownEventError`, after which the
  parser is still usable.
* :func:`media_message`, :func:`mark_message` and :func:`clear_message` build the
  messages the server sends back (§1.3).

Twilio's side of the protocol, which the emulator in ``engine.testing`` plays, is in
:mod:`engine.testing.twilio_side`.

The per-frame paths (:meth:`MediaStreamParser.receive` on ``media``, :func:`media_message`)
run 50 times a second per call, so they take a lean fast path and only diagnose a message
precisely once it has failed.

This module is longer than most here, and is one concern: the server's half of the Media
Streams protocol, every message and field of §1 checked in one place.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeAlias

import orjson

from engine.errors import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    ProtocolError,
    UnknownEventError,
)
from engine.media._fields import (
    CHANNELS,
    MULAW,
    SAMPLE_RATE,
    b64text,
    decode_base64,
    dumps,
    event_name,
    field,
    int_field,
    invalid,
    is_counter,
    is_sid,
    object_field,
    short,
    str_field,
    uint_field,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Connected",
    "Dtmf",
    "InboundEvent",
    "Mark",
    "Media",
    "MediaStreamParser",
    "ParserStatistics",
    "Start",
    "Stop",
    "clear_message",
    "mark_message",
    "media_message",
]

MAX_MESSAGE_BYTES: Final = 65536
"""Largest inbound WebSocket message, in UTF-8 bytes, that :class:`MediaStreamParser` accepts.

A 20 ms media frame is about 330 bytes; anything above 64 KiB is refused with close code 1009.
"""

# Counter strings longer than this are refused: 19 digits still fit in a signed 64-bit
# integer, and it keeps int() clear of CPython's 4300-digit conversion limit.
_MAX_DIGITS: Final = 19
_a2b = binascii.a2b_base64
_b2a = binascii.b2a_base64
_loads = orjson.loads  # a third of json.loads's time on a media message
_json_string = json.encoder.encode_basestring_ascii  # as json.dumps writes a str

_MEDIA_TRACKS: Final = ("inbound", "outbound")
_MAX_EVENT_NAME: Final = 100

# Parser states.
_AWAIT_CONNECTED: Final = 0
_AWAIT_START: Final = 1
_STREAMING: Final = 2
_STOPPED: Final = 3


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Connected:
    """Twilio's first message on a stream (``event: connected``)."""

    protocol: str
    """The protocol name, ``"Call"`` in practice."""
    version: str
    """The protocol version, ``"1.0.0"`` in practice."""


@dataclass(frozen=True, slots=True)
class Start:
    """The stream's metadata (``event: start``), sent once, right after ``connected``.

    ``custom_parameters`` holds the ``<Parameter>`` values of the ``<Stream>`` as a plain
    ``dict`` owned by this event: treat it as read-only and never mutate it (the event is
    frozen, and other parts of the engine may share it). Because it is a ``dict``, a
    ``Start`` compares by value but is not hashable.
    """

    sequence_number: int
    """The message's ``sequenceNumber`` (``1`` from Twilio; not enforced)."""
    stream_sid: str
    """The stream's SID (``MZ`` + 32 hex digits from Twilio); ASCII letters and digits."""
    account_sid: str
    """The account SID (``AC…``)."""
    call_sid: str
    """The call SID (``CA…``)."""
    tracks: tuple[str, ...]
    """The tracks to expect, e.g. ``("inbound",)``."""
    custom_parameters: Mapping[str, str]
    """``start.customParameters`` (empty when absent). A ``dict``: do not mutate it."""
    encoding: str
    """Always ``"audio/x-mulaw"`` (the parser refuses anything else)."""
    sample_rate: int
    """Always ``8000``."""
    channels: int
    """Always ``1``."""


@dataclass(frozen=True, slots=True)
class Media:
    """One frame of audio (``event: media``)."""

    sequence_number: int
    """The message's ``sequenceNumber``."""
    track: str
    """``"inbound"`` or ``"outbound"``."""
    chunk: int
    """The media chunk counter (starts at 1, shared by all tracks)."""
    timestamp: int
    """Presentation time in milliseconds from the start of the stream."""
    payload: bytes
    """The decoded audio: raw 8 kHz mono μ-law bytes (160 for a 20 ms frame)."""


@dataclass(frozen=True, slots=True)
class Dtmf:
    """A key press on the caller's phone (``event: dtmf``; bidirectional streams only)."""

    sequence_number: int
    """The message's ``sequenceNumber``."""
    track: str
    """The track the digit came on; Twilio always sends ``"inbound_track"``."""
    digit: str
    """The key: ``"0"``–``"9"``, ``"*"``, ``"#"`` (passed through unchecked)."""


@dataclass(frozen=True, slots=True)
class Mark:
    """Twilio echoing a mark the server sent (``event: mark``): played **or** cleared."""

    sequence_number: int
    """The message's ``sequenceNumber``."""
    name: str
    """The mark's name, as the server sent it."""


@dataclass(frozen=True, slots=True)
class Stop:
    """The stream has ended (``event: stop``); nothing may follow it."""

    sequence_number: int
    """The message's ``sequenceNumber``."""
    account_sid: str
    """The account SID (``AC…``)."""
    call_sid: str
    """The call SID (``CA…``)."""


InboundEvent: TypeAlias = Connected | Start | Media | Dtmf | Mark | Stop
"""Any event :meth:`MediaStreamParser.receive` returns."""


@dataclass(frozen=True, slots=True)
class ParserStatistics:
    """A snapshot of one :class:`MediaStreamParser`'s counters."""

    messages: int
    """Messages accepted: every event returned, plus every unknown event counted."""
    media: int
    """``media`` events returned."""
    gaps: int
    """How many times ``sequenceNumber`` jumped forward by more than one."""
    missing: int
    """Total sequence numbers skipped over by those jumps."""
    chunk_gaps: int
    """How many times ``media.chunk`` jumped forward by more than one."""
    duplicates: int
    """Messages that repeated the previous ``sequenceNumber``."""
    out_of_order: int
    """Messages whose ``sequenceNumber`` went back (they are accepted all the same)."""
    unknown_events: int
    """Well-formed messages with an ``event`` this parser does not know."""

    @property
    def sequence_anomalies(self) -> int:
        """Sequence numbers skipped over, repeated or out of order."""
        return self.gaps + self.duplicates + self.out_of_order


# --------------------------------------------------------------------------- the parser


class MediaStreamParser:
    """The server side of one Media Streams WebSocket: messages in, events out.

    Use one instance per WebSocket and feed it every message, in order, through
    :meth:`receive`. The parser enforces the order ``connected`` (exactly once, first),
    ``start`` (exactly once, next), then any number of ``media``/``dtmf``/``mark``, then
    ``stop``, after which nothing may arrive.

    A message that raises :class:`~engine.errors.ProtocolError` leaves the parser's state
    and counters exactly as they were, with one deliberate exception: an
    :class:`~engine.errors.UnknownEventError` is counted (in ``messages`` and
    ``unknown_events``, and its ``sequenceNumber`` if present and valid), so that the
    session can carry on and the next message's sequence number is not seen as a gap.
    """

    __slots__ = (
        "_chunk_gaps",
        "_duplicates",
        "_gaps",
        "_last_chunk",
        "_last_seq",
        "_media",
        "_messages",
        "_missing",
        "_out_of_order",
        "_start",
        "_state",
        "_stream_sid",
        "_unknown",
    )

    def __init__(self) -> None:
        """Create a parser waiting for Twilio's ``connected`` message."""
        self._state: int = _AWAIT_CONNECTED
        self._start: Start | None = None
        self._stream_sid: str | None = None
        self._last_seq = -1  # -1: no sequence number seen yet
        self._last_chunk = -1  # -1: no media chunk seen yet
        self._messages = 0
        self._media = 0
        self._gaps = 0
        self._missing = 0
        self._chunk_gaps = 0
        self._duplicates = 0
        self._out_of_order = 0
        self._unknown = 0

    # ---------------------------------------------------------------- public state

    @property
    def stream_sid(self) -> str | None:
        """The stream's SID from ``start``, or ``None`` before ``start``."""
        return self._stream_sid

    @property
    def start(self) -> Start | None:
        """The :class:`Start` event, or ``None`` before it arrived."""
        return self._start

    @property
    def stopped(self) -> bool:
        """Whether ``stop`` has been received (any further message is an error)."""
        return self._state == _STOPPED

    def statistics(self) -> ParserStatistics:
        """A snapshot of the counters: messages, media, sequence gaps, chunk gaps, unknowns."""
        return ParserStatistics(
            messages=self._messages,
            media=self._media,
            gaps=self._gaps,
            missing=self._missing,
            chunk_gaps=self._chunk_gaps,
            duplicates=self._duplicates,
            out_of_order=self._out_of_order,
            unknown_events=self._unknown,
        )

    # ---------------------------------------------------------------- receiving

    def receive(self, message: str | bytes) -> InboundEvent:
        """Parse one WebSocket message from Twilio into its event.

        ``message`` is the message as the WebSocket library delivers it: ``str`` for a
        text frame, ``bytes`` for a binary one.

        Raises :class:`~engine.errors.ProtocolError` with ``close_code``:

        * 1003 for a binary frame or a media format other than μ-law/8000/1;
        * 1009 for a message over :data:`MAX_MESSAGE_BYTES`;
        * 1007 for invalid JSON, a non-object, or a field missing, of the wrong type or
          malformed (the message names the field, e.g. ``start.callSid``);
        * 1002 for a message out of order (``media`` before ``start``, anything after
          ``stop``); a ``sequenceNumber`` that skips, repeats or goes back is only counted;
        * 1008 for a ``streamSid`` that does not match the stream's.

        Raises :class:`~engine.errors.UnknownEventError` (a ``ProtocolError``) for a
        well-formed message whose ``event`` is unknown; the caller may ignore it and go on.
        """
        if not isinstance(message, str):
            raise ProtocolError(
                "binary WebSocket frames are not supported; Media Streams use text frames",
                CLOSE_UNSUPPORTED_DATA,
            )
        size = len(message)
        # A str's UTF-8 size is at least its length and at most four times it, and
        # isascii() is O(1) in CPython, so only long non-ASCII text gets encoded.
        if size > MAX_MESSAGE_BYTES or (
            size > MAX_MESSAGE_BYTES // 4
            and not message.isascii()
            and len(message.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES
        ):
            raise ProtocolError(
                f"message too big: over {MAX_MESSAGE_BYTES} bytes", CLOSE_MESSAGE_TOO_BIG
            )
        try:
            msg = _loads(message)
        except (ValueError, RecursionError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise ProtocolError(f"invalid JSON: {exc}", CLOSE_INVALID_PAYLOAD) from None
        if type(msg) is not dict:
            raise invalid("message", "a JSON object", msg)
        event = msg.get("event")

        if event == "media" and self._state == _STREAMING:
            # Fast path for the 50-per-second message: look everything up directly,
            # and on any surprise fall through to the slow path, which re-checks the
            # whole message and raises a precise error. Nothing is committed until
            # every check has passed.
            try:
                media = msg["media"]
                seq_text = msg["sequenceNumber"]
                chunk_text = media["chunk"]
                timestamp_text = media["timestamp"]
                track = media["track"]
                payload = _a2b(media["payload"], strict_mode=True)
                ok = (
                    msg["streamSid"] == self._stream_sid
                    and (track == "inbound" or track == "outbound")
                    and seq_text.isdigit()
                    and seq_text.isascii()
                    and len(seq_text) <= _MAX_DIGITS
                    and chunk_text.isdigit()
                    and chunk_text.isascii()
                    and len(chunk_text) <= _MAX_DIGITS
                    and timestamp_text.isdigit()
                    and timestamp_text.isascii()
                    and len(timestamp_text) <= _MAX_DIGITS
                )
            except (KeyError, TypeError, ValueError, AttributeError):
                ok = False
            if ok:
                seq = int(seq_text)
                if seq == self._last_seq + 1:
                    self._last_seq = seq
                else:
                    self._advance(seq)
                chunk = int(chunk_text)
                last_chunk = self._last_chunk
                if chunk > last_chunk + 1 and last_chunk >= 0:
                    self._chunk_gaps += 1
                self._last_chunk = chunk
                self._messages += 1
                self._media += 1
                return Media(seq, track, chunk, int(timestamp_text), payload)
        return self._receive_slow(msg)

    def _receive_slow(self, msg: dict[str, Any]) -> InboundEvent:
        """Check one decoded message completely, field by field, and apply it."""
        event = event_name(msg)
        state = self._state
        if state == _STOPPED:
            raise ProtocolError(
                f"{short(event)} message after 'stop': the stream has ended",
                CLOSE_PROTOCOL_ERROR,
            )
        if event == "connected":
            if state != _AWAIT_CONNECTED:
                raise ProtocolError("second 'connected' message", CLOSE_PROTOCOL_ERROR)
            return self._on_connected(msg)
        if state == _AWAIT_CONNECTED:
            raise ProtocolError(
                f"expected 'connected' as the first message, got {short(event)}",
                CLOSE_PROTOCOL_ERROR,
            )
        if event == "start":
            if state != _AWAIT_START:
                raise ProtocolError("second 'start' message", CLOSE_PROTOCOL_ERROR)
            return self._on_start(msg)
        if event not in ("media", "dtmf", "mark", "stop"):
            self._on_unknown(msg, event)
        if state == _AWAIT_START:
            raise ProtocolError(f"{event!r} message before 'start'", CLOSE_PROTOCOL_ERROR)
        if event == "media":
            return self._on_media(msg)
        if event == "dtmf":
            return self._on_dtmf(msg)
        if event == "mark":
            return self._on_mark(msg)
        return self._on_stop(msg)

    def _advance(self, seq: int) -> None:
        """Account for one message's ``sequenceNumber``: count jumps forward, repeats and steps
        back (a phone call is worth more than the strictness: the message still counts)."""
        last = self._last_seq
        if last < 0 or seq == last + 1:
            self._last_seq = seq
        elif seq > last:
            self._gaps += 1
            self._missing += seq - last - 1
            self._last_seq = seq
        elif seq == last:
            self._duplicates += 1
        else:
            self._out_of_order += 1

    def _check_sequenced(self, msg: dict[str, Any], event: str) -> int:
        """Validate ``sequenceNumber`` and ``streamSid`` of a message after ``start``."""
        seq = uint_field(msg, "sequenceNumber", "sequenceNumber")
        sid = str_field(msg, "streamSid", "streamSid")
        if sid != self._stream_sid:
            raise ProtocolError(
                f"streamSid mismatch: {event!r} message has {short(sid)}, "
                f"the stream is {self._stream_sid!r}",
                CLOSE_POLICY_VIOLATION,
            )
        return seq

    def _on_connected(self, msg: dict[str, Any]) -> Connected:
        protocol = str_field(msg, "protocol", "protocol")
        version = str_field(msg, "version", "version")
        self._state = _AWAIT_START
        self._messages += 1
        return Connected(protocol, version)

    def _on_start(self, msg: dict[str, Any]) -> Start:
        seq = uint_field(msg, "sequenceNumber", "sequenceNumber")
        top_sid = str_field(msg, "streamSid", "streamSid")
        start = object_field(msg, "start", "start")
        stream_sid = str_field(start, "streamSid", "start.streamSid")
        account_sid = str_field(start, "accountSid", "start.accountSid")
        call_sid = str_field(start, "callSid", "start.callSid")
        tracks = field(start, "tracks", "start.tracks", "an array of strings")
        if type(tracks) is not list:
            raise invalid("start.tracks", "an array of strings", tracks)
        for index, track in enumerate(tracks):
            if type(track) is not str:
                raise invalid(f"start.tracks[{index}]", "a string", track)
        params = start.get("customParameters", {})
        if type(params) is not dict:
            raise invalid("start.customParameters", "an object of strings", params)
        for key, value in params.items():
            if type(value) is not str:
                raise invalid(f"start.customParameters.{key[:40]}", "a string", value)
        media_format = object_field(start, "mediaFormat", "start.mediaFormat")
        encoding = str_field(media_format, "encoding", "start.mediaFormat.encoding")
        sample_rate = int_field(media_format, "sampleRate", "start.mediaFormat.sampleRate")
        channels = int_field(media_format, "channels", "start.mediaFormat.channels")

        if not is_sid(top_sid):
            raise invalid("streamSid", "a SID of ASCII letters and digits", top_sid)
        if stream_sid != top_sid:
            raise ProtocolError(
                f"streamSid mismatch: start.streamSid {short(stream_sid)} "
                f"differs from streamSid {top_sid!r}",
                CLOSE_POLICY_VIOLATION,
            )
        if encoding != MULAW:
            raise ProtocolError(
                f"start.mediaFormat.encoding: unsupported {short(encoding)}, "
                f"only {MULAW!r} is supported",
                CLOSE_UNSUPPORTED_DATA,
            )
        if sample_rate != SAMPLE_RATE:
            raise ProtocolError(
                f"start.mediaFormat.sampleRate: unsupported {sample_rate}, "
                f"only {SAMPLE_RATE} is supported",
                CLOSE_UNSUPPORTED_DATA,
            )
        if channels != CHANNELS:
            raise ProtocolError(
                f"start.mediaFormat.channels: unsupported {channels}, only {CHANNELS} is supported",
                CLOSE_UNSUPPORTED_DATA,
            )

        self._advance(seq)
        event = Start(
            sequence_number=seq,
            stream_sid=stream_sid,
            account_sid=account_sid,
            call_sid=call_sid,
            tracks=tuple(tracks),
            custom_parameters=dict(params),
            encoding=encoding,
            sample_rate=sample_rate,
            channels=channels,
        )
        self._start = event
        self._stream_sid = stream_sid
        self._state = _STREAMING
        self._messages += 1
        return event

    def _on_media(self, msg: dict[str, Any]) -> Media:
        seq = self._check_sequenced(msg, "media")
        media = object_field(msg, "media", "media")
        track = str_field(media, "track", "media.track")
        if track not in _MEDIA_TRACKS:
            raise ProtocolError(
                f"media.track: expected 'inbound' or 'outbound', got {short(track)}",
                CLOSE_INVALID_PAYLOAD,
            )
        chunk = uint_field(media, "chunk", "media.chunk")
        timestamp = uint_field(media, "timestamp", "media.timestamp")
        payload = decode_base64(str_field(media, "payload", "media.payload"), "media.payload")
        self._advance(seq)
        if chunk > self._last_chunk + 1 and self._last_chunk >= 0:
            self._chunk_gaps += 1
        self._last_chunk = chunk
        self._messages += 1
        self._media += 1
        return Media(seq, track, chunk, timestamp, payload)

    def _on_dtmf(self, msg: dict[str, Any]) -> Dtmf:
        seq = self._check_sequenced(msg, "dtmf")
        dtmf = object_field(msg, "dtmf", "dtmf")
        track = str_field(dtmf, "track", "dtmf.track")
        digit = str_field(dtmf, "digit", "dtmf.digit")
        self._advance(seq)
        self._messages += 1
        return Dtmf(seq, track, digit)

    def _on_mark(self, msg: dict[str, Any]) -> Mark:
        seq = self._check_sequenced(msg, "mark")
        mark = object_field(msg, "mark", "mark")
        name = str_field(mark, "name", "mark.name")
        self._advance(seq)
        self._messages += 1
        return Mark(seq, name)

    def _on_stop(self, msg: dict[str, Any]) -> Stop:
        seq = self._check_sequenced(msg, "stop")
        stop = object_field(msg, "stop", "stop")
        account_sid = str_field(stop, "accountSid", "stop.accountSid")
        call_sid = str_field(stop, "callSid", "stop.callSid")
        self._advance(seq)
        self._state = _STOPPED
        self._messages += 1
        return Stop(seq, account_sid, call_sid)

    def _on_unknown(self, msg: dict[str, Any], event: str) -> NoReturn:
        """Count a well-formed message with an unknown ``event``, then raise UnknownEventError."""
        seq_text = msg.get("sequenceNumber")
        if type(seq_text) is str and is_counter(seq_text):
            self._advance(int(seq_text))
        self._messages += 1
        self._unknown += 1
        raise UnknownEventError(event[:_MAX_EVENT_NAME])


# --------------------------------------------------------------------------- server → Twilio


def media_message(stream_sid: str, payload: bytes | bytearray | memoryview) -> str:
    """The ``media`` message (§1.3) that asks Twilio to play ``payload``.

    ``payload`` is raw 8 kHz mono μ-law (no WAV header), of any length. A ``stream_sid``
    of ASCII letters and digits (every real SID, and every SID the parser accepts) is
    spliced straight into the text; anything else is escaped through :mod:`json`.
    """
    if stream_sid.isascii() and stream_sid.isalnum():
        return (
            '{"event":"media","streamSid":"'
            + stream_sid
            + '","media":{"payload":"'
            + _b2a(payload, newline=False).decode("ascii")
            + '"}}'
        )
    return dumps(
        {"event": "media", "streamSid": stream_sid, "media": {"payload": b64text(payload)}}
    )


def mark_message(stream_sid: str, name: str) -> str:
    """The ``mark`` message (§1.3): Twilio echoes ``name`` once the audio before it has played."""
    if stream_sid.isascii() and stream_sid.isalnum():  # spliced as media_message does
        return (
            '{"event":"mark","streamSid":"'
            + stream_sid
            + '","mark":{"name":'
            + _json_string(name)
            + "}}"
        )
    return dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    """The ``clear`` message (§1.3): Twilio drops its playback buffer (barge-in)."""
    return dumps({"event": "clear", "streamSid": stream_sid})
