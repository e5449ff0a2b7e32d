"""The emulated Twilio side, public for your own tests.

- :func:`open_inbound_call` — ring a server (signed voice webhook), follow its TwiML, stream audio.
- :func:`open_stream` — the Media Streams client alone, for a known stream URL.
- :class:`EmulatedStream` / :class:`StreamRecord` — speak into a call; see what the caller heard.
- :func:`speech` — real speech (eSpeak NG) as 8 kHz μ-law, for test audio.
- :func:`read_audio` — a WAV or raw μ-law file as 8 kHz μ-law.
"""

from engine.testing.audio import read_audio
from engine.testing.caller import EmulatorError, InboundCall, open_inbound_call, ring
from engine.testing.stream import EmulatedStream, StreamRecord, new_sid, open_stream
from engine.tts import speak_ulaw as speech

__all__ = [
    "EmulatedStream",
    "EmulatorError",
    "InboundCall",
    "StreamRecord",
    "new_sid",
    "open_inbound_call",
    "open_stream",
    "read_audio",
    "ring",
    "speech",
]
