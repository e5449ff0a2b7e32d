"""voice-engine: a low-latency streaming audio engine for phone calls over Twilio, on trio.

The public face — everything a user embedding the engine needs, importable from here::

    from engine import CallContext, Stage, Utterance        # write a stage
    from engine import ServerConfig, serve                  # run the server in your own code
    from engine import Credentials, TwilioClient, send_sms  # the actions
    from engine import Component, execute                   # the actions as task objects

Writing a stage: subclass :class:`Stage` and override ``on_utterance`` (or ``run``); it talks
to its call through :class:`CallContext` and receives the frames below. Serving: pass a
:class:`ServerConfig` to :func:`serve` (``nursery.start(serve, config)``), or use
:class:`VoiceServer` for its ``make_call`` and ``shutdown``. The emulated Twilio side for your
tests is :mod:`engine.testing`.

Where things live: ``engine.media`` is the per-call media path (frames, channels, codec,
protocol, VAD/turn, the stage interface, playout, the call session); ``engine.control`` is the
Twilio control plane (signatures, stream tokens, TwiML, REST client, the actions);
``engine.transport`` is the front door (one port: webhooks and media); ``engine.switchboard``,
``engine.webhooks`` and ``engine.server`` put them together; ``engine.cli`` is the command
line. Names are loaded on first use, so importing a frame does not load the HTTP server.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.admission import AdmissionConfig
    from engine.component import Component, execute
    from engine.control.calls import make_call
    from engine.control.messages import send_sms, send_whatsapp
    from engine.control.rest import Credentials, TwilioClient
    from engine.errors import (
        ConfigError,
        EngineError,
        InvalidInput,
        Overloaded,
        ProtocolError,
        TwilioAPIError,
    )
    from engine.media.call import SessionConfig
    from engine.media.frames import (
        PCM,
        Audio,
        Dtmf,
        Interrupted,
        PlaybackDone,
        SpeechEnded,
        SpeechStarted,
        Utterance,
    )
    from engine.media.playout import PlayoutConfig
    from engine.media.stage import CallContext, Stage, StageFactory
    from engine.media.vad import TurnConfig
    from engine.server import ServerConfig, Triggers, VoiceServer, serve

_HOMES = {
    "AdmissionConfig": "engine.admission",
    "Component": "engine.component",
    "execute": "engine.component",
    "make_call": "engine.control.calls",
    "send_sms": "engine.control.messages",
    "send_whatsapp": "engine.control.messages",
    "Credentials": "engine.control.rest",
    "TwilioClient": "engine.control.rest",
    "ConfigError": "engine.errors",
    "EngineError": "engine.errors",
    "InvalidInput": "engine.errors",
    "Overloaded": "engine.errors",
    "ProtocolError": "engine.errors",
    "TwilioAPIError": "engine.errors",
    "PCM": "engine.media.frames",
    "Audio": "engine.media.frames",
    "Dtmf": "engine.media.frames",
    "Interrupted": "engine.media.frames",
    "PlaybackDone": "engine.media.frames",
    "SpeechEnded": "engine.media.frames",
    "SpeechStarted": "engine.media.frames",
    "Utterance": "engine.media.frames",
    "PlayoutConfig": "engine.media.playout",
    "SessionConfig": "engine.media.call",
    "CallContext": "engine.media.stage",
    "Stage": "engine.media.stage",
    "StageFactory": "engine.media.stage",
    "TurnConfig": "engine.media.vad",
    "ServerConfig": "engine.server",
    "Triggers": "engine.server",
    "VoiceServer": "engine.server",
    "serve": "engine.server",
}

__all__ = [
    "PCM",
    "AdmissionConfig",
    "Audio",
    "CallContext",
    "Component",
    "ConfigError",
    "Credentials",
    "Dtmf",
    "EngineError",
    "Interrupted",
    "InvalidInput",
    "Overloaded",
    "PlaybackDone",
    "PlayoutConfig",
    "ProtocolError",
    "ServerConfig",
    "SessionConfig",
    "SpeechEnded",
    "SpeechStarted",
    "Stage",
    "StageFactory",
    "Triggers",
    "TurnConfig",
    "TwilioAPIError",
    "TwilioClient",
    "Utterance",
    "VoiceServer",
    "execute",
    "make_call",
    "send_sms",
    "send_whatsapp",
    "serve",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
