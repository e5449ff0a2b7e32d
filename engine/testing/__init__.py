"""The emulated Twilio side, public for your own tests.

- :func:`open_inbound_call` — ring a server (signed voice webhook), follow its TwiML, stream audio.
- :func:`open_stream` — the Media Streams client alone, for a known stream URL.
- :class:`EmulatedStream` / :class:`StreamRecord` — speak into a call; see what the caller heard.
- :func:`speech` — real speech (eSpeak NG) as 8 kHz μ-law, for test audio.
- :func:`open_twilio_emulator` — Twilio's REST API (Calls, Messages) on loopback, checked against
  Twilio's OpenAPI description, with full call lifecycles, signed callbacks and fault injection.
- :func:`read_audio` — a WAV or raw μ-law file as 8 kHz μ-law.
"""

from engine.testing.audio import read_audio, speech_bounds
from engine.testing.caller import (
    CallRefused,
    EmulatorError,
    InboundCall,
    open_answered_stream,
    open_inbound_call,
    ring,
)
from engine.testing.stream import EmulatedStream, StreamRecord, new_sid, open_stream
from engine.testing.twilio_api import (
    CalleeBehaviour,
    EmulatedCallState,
    EmulatedMessage,
    RecordedRequest,
    TwilioEmulator,
    WebhookAttempt,
    open_twilio_emulator,
)
from engine.tts import speak_ulaw as speech

__all__ = [
    "CallRefused",
    "CalleeBehaviour",
    "EmulatedCallState",
    "EmulatedMessage",
    "EmulatedStream",
    "EmulatorError",
    "InboundCall",
    "RecordedRequest",
    "StreamRecord",
    "TwilioEmulator",
    "WebhookAttempt",
    "new_sid",
    "open_answered_stream",
    "open_inbound_call",
    "open_stream",
    "open_twilio_emulator",
    "read_audio",
    "ring",
    "speech",
    "speech_bounds",
]
