"""``openai-realtime``: the call bridged to OpenAI's Realtime API, μ-law in and μ-law out.

Speech to speech with no transcoding: the caller's 8 kHz μ-law bytes go to the model as
``g711_ulaw`` (``input_audio_buffer.append``, batched to ``batch_ms``), and the model's
``g711_ulaw`` audio deltas go straight to :meth:`CallContext.play_ulaw`. The model's server VAD
decides turns, so the engine's VAD is off (``turn_detection = False``) and so is its barge-in
(``barge_in = False``); the stage does barge-in itself, from the model's view of the caller:

1. ``input_audio_buffer.speech_started`` → ``response.cancel`` if a response is still streaming
   (its late deltas are dropped), and :meth:`CallContext.interrupt`: playout sends Twilio
   ``clear`` and answers with :class:`~engine.media.frames.Interrupted`, whose ``heard_ms`` comes
   from Twilio's mark echoes and playout's playback clock;
2. :class:`~engine.media.frames.Interrupted` → ``conversation.item.truncate`` of the cut item
   (each delta is played under the label ``"<item_id>:<content_index>"``) at
   ``audio_end_ms = heard_ms``, so the model's context holds only what the caller heard.

Configuration comes from the environment, overridable per argument: ``OPENAI_API_KEY``
(required), ``OPENAI_REALTIME_URL`` (default ``wss://api.openai.com/v1/realtime``),
``OPENAI_REALTIME_MODEL`` (default ``gpt-4o-realtime-preview``, sent as ``?model=``),
``OPENAI_REALTIME_VOICE`` and ``OPENAI_REALTIME_INSTRUCTIONS``. Tools are off (``tools: []``).
A model socket that cannot open, closes or breaks ends the call cleanly (the caller hears what
was queued, then close 1000); ``error`` events are logged and the call goes on, except a refused
``session.update`` (the audio formats would be wrong), which hangs up.

Protocol: the *beta* Realtime events (header ``OpenAI-Beta: realtime=v1``), which most
deployments, proxies and clones speak. Client: ``session.update``, ``input_audio_buffer.append``,
``response.cancel``, ``conversation.item.truncate``. Server: ``session.created``,
``session.updated``, ``input_audio_buffer.speech_started`` / ``speech_stopped``,
``response.created``, ``response.audio.delta`` / ``response.audio.done``, ``response.done``,
``error``. The GA interface differs: no ``OpenAI-Beta`` header; ``session.update`` takes
``session.type = "realtime"`` and nests formats and VAD as ``audio.input.format = {type:
"audio/pcmu"}``, ``audio.input.turn_detection``, ``audio.output.format``, ``audio.output.voice``
(and ``output_modalities`` for ``modalities``); audio deltas are ``response.output_audio.delta``
/ ``.done``. The reader accepts both delta names, so a GA-speaking server's audio still plays,
but the session is configured the beta way.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import trio
import trio_websocket

from engine.errors import ConfigError
from engine.media.frames import Audio, Interrupted, PlaybackDone
from engine.media.stage import CallContext, Stage

__all__ = [
    "DEFAULT_BATCH_MS",
    "DEFAULT_INSTRUCTIONS",
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "DEFAULT_VOICE",
    "OpenAIRealtime",
    "RealtimeConfig",
    "create",
]

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://api.openai.com/v1/realtime"
DEFAULT_MODEL = "gpt-4o-realtime-preview"
DEFAULT_VOICE = "alloy"
DEFAULT_BATCH_MS = 60
DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant on a phone call. Keep answers short and conversational."
)
SESSION_UPDATE_ID = "evt_voice_engine_session_update"
"""The ``event_id`` of our ``session.update``, to recognise an ``error`` that refuses it."""
BYTES_PER_MS = 8  # 8 kHz μ-law: one byte per sample
BENIGN_ERRORS = frozenset({"response_cancel_not_active"})
"""Error codes of races that do no harm (cancelling a response that just finished)."""


@dataclass(frozen=True, slots=True)
class RealtimeConfig:
    """Where and how to reach the Realtime API. :meth:`from_env` fills what is not given."""

    api_key: str
    url: str = DEFAULT_URL
    model: str = DEFAULT_MODEL
    voice: str = DEFAULT_VOICE
    instructions: str = DEFAULT_INSTRUCTIONS
    batch_ms: int = DEFAULT_BATCH_MS
    """Caller audio per ``input_audio_buffer.append`` (a multiple of 20 ms works best)."""
    connect_timeout: float = 10.0
    """Seconds allowed for the model's WebSocket handshake."""
    close_timeout: float = 2.0
    """Seconds allowed for the closing handshake with the model."""

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        api_key: str | None = None,
        url: str | None = None,
        model: str | None = None,
        voice: str | None = None,
        instructions: str | None = None,
        batch_ms: int | None = None,
    ) -> RealtimeConfig:
        """The configuration from ``env`` (default ``os.environ``), with the arguments winning.

        Raises :class:`~engine.errors.ConfigError` when no API key is given or set.
        """
        env = os.environ if env is None else env
        key = api_key or env.get("OPENAI_API_KEY", "")
        if not key:
            raise ConfigError(
                "the openai-realtime pipeline needs an OpenAI API key: set OPENAI_API_KEY "
                "(or pass api_key=…)"
            )
        config = cls(
            api_key=key,
            url=url or env.get("OPENAI_REALTIME_URL") or DEFAULT_URL,
            model=model or env.get("OPENAI_REALTIME_MODEL") or DEFAULT_MODEL,
            voice=voice or env.get("OPENAI_REALTIME_VOICE") or DEFAULT_VOICE,
            instructions=instructions
            if instructions is not None
            else env.get("OPENAI_REALTIME_INSTRUCTIONS") or DEFAULT_INSTRUCTIONS,
            batch_ms=batch_ms if batch_ms is not None else DEFAULT_BATCH_MS,
        )
        if urlsplit(config.url).scheme not in ("ws", "wss"):
            raise ConfigError(
                f"OPENAI_REALTIME_URL must be a ws:// or wss:// URL, not {config.url!r}"
            )
        if config.batch_ms < 20:
            raise ConfigError(f"batch_ms must be at least 20, not {config.batch_ms}")
        return config

    def endpoint(self) -> str:
        """The URL to dial: :attr:`url` with ``model`` added to its query (unless already there)."""
        parts = urlsplit(self.url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if not any(name == "model" for name, _ in query):
            query.append(("model", self.model))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The handshake headers: the bearer key and the beta protocol."""
        return [
            (b"Authorization", b"Bearer " + self.api_key.encode()),
            (b"OpenAI-Beta", b"realtime=v1"),
        ]

    def session(self) -> dict[str, Any]:
        """The ``session`` object of our ``session.update``."""
        return {
            "instructions": self.instructions,
            "voice": self.voice,
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_ulaw",
            "turn_detection": {"type": "server_vad"},
            "tools": [],
        }


class _ModelGone(Exception):
    """The model socket cannot carry the call any more (the message says why)."""


class OpenAIRealtime(Stage):
    """Bridges one call to an OpenAI Realtime session; barge-in from the model's VAD.

    Arguments override the environment (see :class:`RealtimeConfig`); without an API key the
    constructor raises :class:`~engine.errors.ConfigError`.
    """

    receives_audio = True
    turn_detection = False
    barge_in = False

    def __init__(
        self,
        *,
        api_key: str | None = None,
        url: str | None = None,
        model: str | None = None,
        voice: str | None = None,
        instructions: str | None = None,
        batch_ms: int | None = None,
    ) -> None:
        self.config = RealtimeConfig.from_env(
            api_key=api_key,
            url=url,
            model=model,
            voice=voice,
            instructions=instructions,
            batch_ms=batch_ms,
        )
        self._streaming: str | None = None  # id of the response still sending audio
        self._cut: str | None = None  # id of the response cut by barge-in: drop its deltas

    async def run(self, call: CallContext) -> None:
        """Open the model socket, bridge both directions until either side ends, then hang up."""
        config = self.config
        reason = "model closed the session"
        try:
            async with trio_websocket.open_websocket_url(
                config.endpoint(),
                extra_headers=config.headers(),
                connect_timeout=config.connect_timeout,
                disconnect_timeout=config.close_timeout,
            ) as ws:
                log.info("call %s: connected to %s", call.call_sid, config.url)
                await _send(
                    ws, "session.update", session=config.session(), event_id=SESSION_UPDATE_ID
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._forward_caller, call, ws)
                    reason = await self._read_model(call, ws)
                    nursery.cancel_scope.cancel()
        except trio_websocket.ConnectionRejected as exc:
            reason = f"model refused the connection (HTTP {exc.status_code})"
        except trio_websocket.DisconnectionTimeout:
            pass  # the session was over already; only its closing handshake lagged
        except trio_websocket.HandshakeError as exc:
            reason = f"cannot reach the model: {exc.__cause__ or type(exc).__name__}"
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, OSError) as exc:
            reason = f"model connection failed: {exc!r}"
        log.warning("call %s: ending the call: %s", call.call_sid, reason)
        await call.hang_up(reason)

    # -- caller → model ---------------------------------------------------------------------

    async def _forward_caller(
        self, call: CallContext, ws: trio_websocket.WebSocketConnection
    ) -> None:
        batch = self.config.batch_ms * BYTES_PER_MS
        pending = bytearray()
        try:
            async for frame in call:
                match frame:
                    case Audio(ulaw=ulaw):
                        pending += ulaw
                        if len(pending) >= batch:
                            audio = base64.b64encode(pending).decode("ascii")
                            pending.clear()
                            await _send(ws, "input_audio_buffer.append", audio=audio)
                    case Interrupted():
                        await self._truncate(call, ws, frame)
                    case PlaybackDone(label=label, heard_ms=heard_ms):
                        log.debug("call %s: %s played (%d ms)", call.call_sid, label, heard_ms)
        except trio_websocket.ConnectionClosed:
            return  # the reader sees the close too and ends the call

    async def _truncate(
        self, call: CallContext, ws: trio_websocket.WebSocketConnection, cut: Interrupted
    ) -> None:
        item_id, sep, index = cut.label.rpartition(":")
        if not sep or not item_id or not index.isdigit():
            return  # not audio of ours
        log.info(
            "call %s: barge-in: %s heard %d ms (%d ms dropped)",
            call.call_sid,
            item_id,
            cut.heard_ms,
            cut.dropped_ms,
        )
        await _send(
            ws,
            "conversation.item.truncate",
            item_id=item_id,
            content_index=int(index),
            audio_end_ms=cut.heard_ms,
        )

    # -- model → caller ---------------------------------------------------------------------

    async def _read_model(self, call: CallContext, ws: trio_websocket.WebSocketConnection) -> str:
        """Handle model events until the socket closes or fails; returns why the session ended."""
        while True:
            try:
                message = await ws.get_message()
                event = json.loads(message)
                if not isinstance(event, dict):
                    raise TypeError("not an object")
                await self._on_event(call, ws, event)
            except trio_websocket.ConnectionClosed as exc:
                closed = exc.reason
                if closed is None:
                    return "model socket closed"
                why = f": {closed.reason}" if closed.reason else ""
                return f"model socket closed ({closed.code}{why})"
            except _ModelGone as exc:
                return str(exc)
            except (ValueError, TypeError, KeyError, binascii.Error) as exc:
                log.warning(
                    "call %s: ignoring a malformed model event (%r): %.200r",
                    call.call_sid,
                    exc,
                    message,
                )

    async def _on_event(
        self, call: CallContext, ws: trio_websocket.WebSocketConnection, event: dict[str, Any]
    ) -> None:
        match event.get("type"):
            case "response.audio.delta" | "response.output_audio.delta":
                response_id = event.get("response_id")
                if response_id is not None and response_id == self._cut:
                    return  # in flight when the caller barged in: never to be heard
                if self._streaming is None:
                    self._streaming = response_id
                label = f"{event['item_id']}:{int(event.get('content_index', 0))}"
                await call.play_ulaw(base64.b64decode(event["delta"], validate=True), label=label)
            case "input_audio_buffer.speech_started":
                await self._barge_in(call, ws)
            case "response.created":
                self._streaming = event["response"]["id"]
            case "response.done":
                response = event.get("response") or {}
                log.debug("call %s: response done (%s)", call.call_sid, response.get("status"))
                if response.get("id") in (None, self._streaming):
                    self._streaming = None
            case "session.created" | "session.updated":
                log.info("call %s: %s", call.call_sid, event["type"])
            case "error":
                self._on_error(call, event.get("error") or {})
            case _:
                pass  # transcripts, rate limits, item bookkeeping: not needed to bridge audio

    async def _barge_in(self, call: CallContext, ws: trio_websocket.WebSocketConnection) -> None:
        if self._streaming is not None:
            self._cut = self._streaming
            self._streaming = None
            await _send(ws, "response.cancel", response_id=self._cut)
        await call.interrupt("caller speech (model VAD)")

    def _on_error(self, call: CallContext, error: Mapping[str, Any]) -> None:
        code = error.get("code")
        message = error.get("message", "")
        if error.get("event_id") == SESSION_UPDATE_ID:
            raise _ModelGone(f"model refused the session configuration: {message} ({code})")
        level = logging.DEBUG if code in BENIGN_ERRORS else logging.WARNING
        log.log(level, "call %s: model error %s: %s", call.call_sid, code, message)


async def _send(ws: trio_websocket.WebSocketConnection, type_: str, **fields: Any) -> None:
    """Send one client event: ``{"type": type_, **fields}``."""
    await ws.send_message(json.dumps({"type": type_, **fields}, separators=(",", ":")))


def create() -> Stage:
    """The ``openai-realtime`` pipeline's stage, configured from the environment."""
    return OpenAIRealtime()
