"""Twilio's side of the Media Streams protocol (PROTOCOL.md §1), sans-IO, for the emulator.

The mirror image of :mod:`engine.media.protocol`, used by :mod:`engine.testing` to play Twilio:

* :func:`connected_message`, :func:`start_message`, :func:`inbound_media_message`,
  :func:`dtmf_message`, :func:`mark_echo_message` and :func:`stop_message` build the messages
  Twilio sends a server exactly as Twilio writes them (counters as strings, format numbers as
  numbers).
* :func:`parse_outbound` parses what the server sends back into an :data:`OutboundEvent`
  (:class:`OutMedia`, :class:`OutMark`, :class:`OutClear`); here, unknown events are errors.

:func:`inbound_media_message` runs 50 times a second per emulated call, so it splices its text
together in the common case.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from engine.errors import CLOSE_INVALID_PAYLOAD, CLOSE_UNSUPPORTED_DATA, ProtocolError
from engine.media._fields import (
    CHANNELS,
    MULAW,
    SAMPLE_RATE,
    b64text,
    decode_base64,
    dumps,
    event_name,
    invalid,
    is_sid,
    object_field,
    short,
    str_field,
)

__all__ = [
    "OutClear",
    "OutMark",
    "OutMedia",
    "OutboundEvent",
    "connected_message",
    "dtmf_message",
    "inbound_media_message",
    "mark_echo_message",
    "parse_outbound",
    "start_message",
    "stop_message",
]

_b2a = binascii.b2a_base64
_DTMF_TRACK: Final = "inbound_track"


# --------------------------------------------------------------------------- server → Twilio


@dataclass(frozen=True, slots=True)
class OutMedia:
    """Audio the server sent for Twilio to play (outbound ``media``)."""

    stream_sid: str
    """The ``streamSid`` the server addressed."""
    payload: bytes
    """The decoded μ-law bytes."""


@dataclass(frozen=True, slots=True)
class OutMark:
    """A mark the server placed after its queued audio (outbound ``mark``)."""

    stream_sid: str
    """The ``streamSid`` the server addressed."""
    name: str
    """The mark's name."""


@dataclass(frozen=True, slots=True)
class OutClear:
    """The server asked Twilio to drop its playback buffer (outbound ``clear``)."""

    stream_sid: str
    """The ``streamSid`` the server addressed."""


OutboundEvent: TypeAlias = OutMedia | OutMark | OutClear
"""Any event :func:`parse_outbound` returns."""


def _load_object(message: str | bytes) -> dict[str, Any]:
    """Decode one WebSocket text message into a JSON object, or raise ProtocolError."""
    if not isinstance(message, str):
        raise ProtocolError(
            "binary WebSocket frames are not supported; Media Streams use text frames",
            CLOSE_UNSUPPORTED_DATA,
        )
    try:
        msg = json.loads(message)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"invalid JSON: {exc}", CLOSE_INVALID_PAYLOAD) from None
    if type(msg) is not dict:
        raise invalid("message", "a JSON object", msg)
    return msg


def parse_outbound(message: str | bytes) -> OutboundEvent:
    """Parse one message the server sent to Twilio (§1.3), as the emulator receives it.

    Raises :class:`~engine.errors.ProtocolError` on a binary frame (1003), invalid JSON
    or a missing/mistyped field or bad base64 (1007), or an ``event`` other than
    ``media``, ``mark`` and ``clear`` (1003; here an unknown event is an error, and a
    plain ``ProtocolError`` rather than :class:`~engine.errors.UnknownEventError`).
    Extra fields are ignored. No size limit applies: Twilio accepts chunks of any size.
    """
    msg = _load_object(message)
    event = event_name(msg)
    if event not in ("media", "mark", "clear"):
        raise ProtocolError(
            f"unknown outbound event {short(event)}: expected 'media', 'mark' or 'clear'",
            CLOSE_UNSUPPORTED_DATA,
        )
    stream_sid = str_field(msg, "streamSid", "streamSid")
    if not is_sid(stream_sid):
        raise invalid("streamSid", "a SID of ASCII letters and digits", stream_sid)
    if event == "media":
        media = object_field(msg, "media", "media")
        payload = decode_base64(str_field(media, "payload", "media.payload"), "media.payload")
        return OutMedia(stream_sid, payload)
    if event == "mark":
        mark = object_field(msg, "mark", "mark")
        return OutMark(stream_sid, str_field(mark, "name", "mark.name"))
    return OutClear(stream_sid)


# --------------------------------------------------------------------------- Twilio → server


_CONNECTED_MESSAGE: Final = '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def connected_message() -> str:
    """Twilio's first message on a stream: ``connected``, protocol ``Call``, version ``1.0.0``."""
    return _CONNECTED_MESSAGE


def start_message(
    sequence_number: int,
    stream_sid: str,
    account_sid: str,
    call_sid: str,
    custom_parameters: Mapping[str, str],
    tracks: Sequence[str] = ("inbound",),
) -> str:
    """Twilio's ``start`` message, with the fixed μ-law/8000/1 media format (§1.2)."""
    return dumps(
        {
            "event": "start",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "start": {
                "streamSid": stream_sid,
                "accountSid": account_sid,
                "callSid": call_sid,
                "tracks": list(tracks),
                "customParameters": dict(custom_parameters),
                "mediaFormat": {
                    "encoding": MULAW,
                    "sampleRate": SAMPLE_RATE,
                    "channels": CHANNELS,
                },
            },
        }
    )


def inbound_media_message(
    sequence_number: int,
    stream_sid: str,
    chunk: int,
    timestamp: int,
    payload: bytes | bytearray | memoryview,
    track: str = "inbound",
) -> str:
    """Twilio's ``media`` message carrying ``payload`` (raw μ-law), counters as strings (§1.2).

    Built by splicing when ``stream_sid`` and ``track`` are plain ASCII letters and digits
    (the normal case, fast); through :mod:`json` otherwise, so the output is always valid.
    """
    if stream_sid.isascii() and stream_sid.isalnum() and track.isascii() and track.isalnum():
        return (
            '{"event":"media","sequenceNumber":"'
            + str(sequence_number)
            + '","streamSid":"'
            + stream_sid
            + '","media":{"track":"'
            + track
            + '","chunk":"'
            + str(chunk)
            + '","timestamp":"'
            + str(timestamp)
            + '","payload":"'
            + _b2a(payload, newline=False).decode("ascii")
            + '"}}'
        )
    return dumps(
        {
            "event": "media",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "media": {
                "track": track,
                "chunk": str(chunk),
                "timestamp": str(timestamp),
                "payload": b64text(payload),
            },
        }
    )


def dtmf_message(sequence_number: int, stream_sid: str, digit: str) -> str:
    """Twilio's ``dtmf`` message for one key press (track ``inbound_track``, §1.2)."""
    return dumps(
        {
            "event": "dtmf",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "dtmf": {"track": _DTMF_TRACK, "digit": digit},
        }
    )


def mark_echo_message(sequence_number: int, stream_sid: str, name: str) -> str:
    """Twilio's ``mark`` message echoing a mark the server sent (§1.2)."""
    return dumps(
        {
            "event": "mark",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def stop_message(sequence_number: int, stream_sid: str, account_sid: str, call_sid: str) -> str:
    """Twilio's ``stop`` message, sent when the stream stops or the call ends (§1.2)."""
    return dumps(
        {
            "event": "stop",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )
