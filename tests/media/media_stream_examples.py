"""Twilio's Media Streams messages as PROTOCOL.md §1.2 shows them, for the protocol tests.

Shared by ``test_protocol`` (the server side parses them) and ``test_twilio_side`` (Twilio's
side writes them): real-length SIDs, each message as a dict and verbatim as text, the events
the parser makes of them, and a parser that is already streaming.
"""

from __future__ import annotations

import json
from typing import Any

from engine.media.protocol import (
    Connected,
    Dtmf,
    InboundEvent,
    Mark,
    Media,
    MediaStreamParser,
    Start,
    Stop,
)

# Real-length SIDs: two letters + 32 hex digits.
SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
ACCOUNT = "AC25e16e9a716a4a1786a7c47fe0c4f8e3"
CALL = "CA2bb2bb6c08e15e0d2d3ab7a6b8b3b7c5"
OTHER_SID = "MZ00000000000000000000000000000000"
SILENCE_B64 = "////" * 53 + "/w=="  # 160 bytes of 0xFF: 20 ms of μ-law silence (§7)
SILENCE = b"\xff" * 160


def dumps(obj: Any) -> str:
    """Compact JSON, as Twilio writes it."""
    return json.dumps(obj, separators=(",", ":"))


# --------------------------------------------------------------------------- §1.2 example messages

CONNECTED_D: dict[str, Any] = {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start_d() -> dict[str, Any]:
    """The §1.2 ``start`` message (sequenceNumber 1) as a dict."""
    return {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": SID,
        "start": {
            "streamSid": SID,
            "accountSid": ACCOUNT,
            "callSid": CALL,
            "tracks": ["inbound"],
            "customParameters": {"FirstName": "Jane"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }


def media_d(seq: int = 2, chunk: int = 1, timestamp: int = 5) -> dict[str, Any]:
    """A §1.2 ``media`` message (20 ms of silence) as a dict."""
    return {
        "event": "media",
        "sequenceNumber": str(seq),
        "streamSid": SID,
        "media": {
            "track": "inbound",
            "chunk": str(chunk),
            "timestamp": str(timestamp),
            "payload": SILENCE_B64,
        },
    }


def dtmf_d(seq: int = 3) -> dict[str, Any]:
    """The §1.2 ``dtmf`` message (digit 1) as a dict."""
    return {
        "event": "dtmf",
        "sequenceNumber": str(seq),
        "streamSid": SID,
        "dtmf": {"track": "inbound_track", "digit": "1"},
    }


def mark_d(seq: int = 4) -> dict[str, Any]:
    """The §1.2 ``mark`` echo (``utt-7``) as a dict."""
    return {
        "event": "mark",
        "sequenceNumber": str(seq),
        "streamSid": SID,
        "mark": {"name": "utt-7"},
    }


def stop_d(seq: int = 5) -> dict[str, Any]:
    """The §1.2 ``stop`` message as a dict."""
    return {
        "event": "stop",
        "sequenceNumber": str(seq),
        "streamSid": SID,
        "stop": {"accountSid": ACCOUNT, "callSid": CALL},
    }


# The §1.2 examples verbatim (whitespace and all), with the SIDs written out in full.
EXAMPLE_TEXTS = [
    '{"event":"connected","protocol":"Call","version":"1.0.0"}',
    '{"event":"start","sequenceNumber":"1","streamSid":"' + SID + '",\n'
    ' "start":{"streamSid":"' + SID + '","accountSid":"' + ACCOUNT + '","callSid":"' + CALL + '",'
    '"tracks":["inbound"],\n  "customParameters":{"FirstName":"Jane"},\n'
    '  "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}',
    '{"event":"media","sequenceNumber":"2","streamSid":"' + SID + '",\n'
    ' "media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"' + SILENCE_B64 + '"}}',
    '{"event":"dtmf","sequenceNumber":"3","streamSid":"' + SID + '",'
    '"dtmf":{"track":"inbound_track","digit":"1"}}',
    '{"event":"mark","sequenceNumber":"4","streamSid":"' + SID + '","mark":{"name":"utt-7"}}',
    '{"event":"stop","sequenceNumber":"5","streamSid":"' + SID + '",'
    '"stop":{"accountSid":"' + ACCOUNT + '","callSid":"' + CALL + '"}}',
]

EXAMPLE_EVENTS: list[InboundEvent] = [
    Connected(protocol="Call", version="1.0.0"),
    Start(
        sequence_number=1,
        stream_sid=SID,
        account_sid=ACCOUNT,
        call_sid=CALL,
        tracks=("inbound",),
        custom_parameters={"FirstName": "Jane"},
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
    ),
    Media(sequence_number=2, track="inbound", chunk=1, timestamp=5, payload=SILENCE),
    Dtmf(sequence_number=3, track="inbound_track", digit="1"),
    Mark(sequence_number=4, name="utt-7"),
    Stop(sequence_number=5, account_sid=ACCOUNT, call_sid=CALL),
]


def streaming_parser() -> MediaStreamParser:
    """A parser that has had ``connected`` and ``start`` (sequenceNumber 1)."""
    parser = MediaStreamParser()
    parser.receive(dumps(CONNECTED_D))
    parser.receive(dumps(start_d()))
    return parser
