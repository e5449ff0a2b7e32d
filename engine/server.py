"""The voice server: :class:`ServerConfig`, and :class:`VoiceServer` that composes the parts.

One port serves everything (``voice-engine serve --port``):

    connection ─▶ front door (engine.transport) ─┬─ media upgrade ─▶ switchboard ─▶ call session
                                                 └─ other HTTP ───▶ webhooks (Quart on hypercorn)

The front door reads each connection's first request and routes it; the switchboard
(:mod:`engine.switchboard`) admits, authorizes and runs calls; the webhooks
(:mod:`engine.webhooks`) answer Twilio's requests. ``media_port`` adds a second listener for
deployments that split media onto their own port — the same front door, the same code.

Shutdown drains (:meth:`VoiceServer.shutdown`): new calls are refused while calls in flight run
on for ``drain_timeout`` seconds; those still running are then wound down (a spoken notice,
heard whole, then a normal close).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from engine.admission import AdmissionConfig
from engine.control.calls import CallStatusBoard, make_call
from engine.control.rest import TwilioClient
from engine.control.signature import WebhookAuth
from engine.control.twiml import stream_url
from engine.errors import ConfigError, InvalidInput
from engine.loader import BUNDLED
from engine.media.protocol import MAX_MESSAGE_BYTES
from engine.media.session import SessionConfig
from engine.media.stage import StageFactory
from engine.switchboard import Switchboard, SwitchboardConfig
from engine.transport.frontdoor import FrontDoor, MediaRoute, raise_descriptor_limit
from engine.transport.http import HttpLimits, open_http_app
from engine.webhooks import TriggerHandler, Triggers, make_app

__all__ = ["MEDIA_PATH", "ServerConfig", "TriggerHandler", "Triggers", "VoiceServer", "serve"]

log = logging.getLogger(__name__)

MEDIA_PATH = "/twilio/media"
INSECURE_SECRET_ENV = "VOICE_ENGINE_STREAM_SECRET"
"""Internal: the stream-token key ``serve --workers N --insecure`` hands its workers."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What ``voice-engine serve`` is given."""

    stage_factory: StageFactory
    """The default pipeline's stage factory (a call may name another, see ``makeCall``)."""
    auth_token: str | None = field(repr=False)
    """Twilio's Auth Token: signs webhooks and keys stream tokens. Required unless ``insecure``."""
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    """The base URL Twilio requests (signatures are checked against it); default from the bind."""
    media_port: int | None = None
    """Also accept media streams on this port (0 = any), for deployments that route them
    separately; Twilio is sent ``media_url``, or ws://HOST:PORT/twilio/media locally."""
    media_url: str | None = None
    """The public ``wss://…/twilio/media`` URL of the media port, when a proxy routes it."""
    insecure: bool = False
    """Run without an auth token: no signature checks, stream tokens keyed per process."""
    pipelines: frozenset[str] = frozenset(BUNDLED)
    """The pipeline names a call may ask for (``?pipeline=`` on the voice webhook, as
    ``makeCall`` sets it); anything else is refused, so a URL can never import arbitrary code."""
    http_fd: int | None = None
    """An inherited listening socket to serve on instead of binding ``host:port``
    (``serve --workers N`` shares one socket among its workers this way)."""
    media_fd: int | None = None
    """Likewise for the media port."""
    session: SessionConfig = field(default_factory=SessionConfig)
    triggers: Triggers = field(default_factory=Triggers)
    token_ttl: float = 120.0
    previous_auth_tokens: tuple[str, ...] = field(default=(), repr=False)
    """Auth Tokens rotated out but still accepted (webhook signatures, stream tokens) during a
    grace period, so a token can be rotated without dropping a call."""
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    http: HttpLimits = field(default_factory=HttpLimits)
    """Idle and request timeouts and size limits at the front door."""
    max_connections: int | None = None
    """Connections open at once (webhooks and media); default: from the descriptor limit."""
    drain_timeout: float = 0.0
    """On shutdown, seconds calls in flight may run on (new calls refused) before they are
    wound down."""
    shutdown_notice: str | None = None
    """Spoken to calls still running when the drain time is over; ``None``: just close."""
    busy_message: str = "Sorry, all our lines are busy right now. Please call again later."
    """Said to an answered call the server cannot take (an unanswered inbound one is rejected
    with a busy tone instead)."""
    shutdown_timeout: float = 5.0
    """Seconds allowed for winding calls down and closing sockets once draining is over."""

    def __post_init__(self) -> None:
        if not self.auth_token and not self.insecure:
            raise ConfigError(
                "TWILIO_AUTH_TOKEN is not set: webhooks could not be verified. Set it, or pass "
                "--insecure to run without signature checks (never on a public address)."
            )
        inbound = self.triggers.sub_workflow
        if inbound is not None and inbound not in self.pipelines:
            raise ConfigError(f"inboundCall subWorkflow {inbound!r} is not in pipelines")


def _listen(host: str, port: int, fd: int | None) -> socket.socket:
    if fd is not None:
        return socket.socket(fileno=fd)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(1024)
    return sock


def _base_url(sock: socket.socket, scheme: str) -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


class VoiceServer:
    """One server process: front door, webhooks and switchboard, and their lifecycle."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        tokens = (config.auth_token or "", *config.previous_auth_tokens)
        self.auth = WebhookAuth(tokens if config.auth_token else ())
        secret = (
            config.auth_token
            or os.environ.get(INSECURE_SECRET_ENV)  # shared by the workers of --insecure serve
            or secrets.token_urlsafe(32)
        )
        self.switchboard = Switchboard(
            SwitchboardConfig(
                stage_factory=config.stage_factory,
                pipelines=config.pipelines,
                session=config.session,
                admission=config.admission,
                token_ttl=config.token_ttl,
            ),
            self.auth,
            (secret, *config.previous_auth_tokens),
        )
        self.status_board = CallStatusBoard()
        """Status callbacks for the ``makeCall`` s waiting in this process."""
        self.public_url = config.public_url.rstrip("/") if config.public_url else None
        self.media_port: int | None = None
        """The media port's bound port, when there is one."""
        self._shutdown = trio.Event()
        self.app, self._triggers = make_app(
            self.switchboard,
            self.status_board,
            config.triggers,
            public_url=lambda: self.public_url or "",
            draining=self._shutdown.is_set,
            busy_message=config.busy_message,
        )
        self.door: FrontDoor | None = None

    @property
    def sessions(self) -> set[Any]:
        """The calls running now."""
        return self.switchboard.sessions

    @property
    def media_url(self) -> str:
        """The ``ws(s)://…/twilio/media`` URL Twilio dials (and the handshake is signed for)."""
        return self.switchboard.media_url

    def refuse_if_full(self) -> None:
        """Raise :class:`~engine.errors.Overloaded` if this server would refuse a new call now
        (``makeCall`` asks before placing one)."""
        self.switchboard.refuse_if_full()

    async def make_call(self, client: TwilioClient, **options: Any) -> dict[str, Any]:
        """The ``makeCall`` action on this server: refuse at once (:class:`Overloaded`) if it
        could not take the call, or (:class:`InvalidInput`, ``subWorkflow``) if it does not
        serve ``pipeline``; else place it (see :func:`~engine.control.calls.make_call` for
        ``options``) and return its outcome when it ends."""
        pipeline = options.get("pipeline")
        if not isinstance(pipeline, str) or pipeline not in self.config.pipelines:
            served = ", ".join(sorted(self.config.pipelines))
            raise InvalidInput(
                "subWorkflow", f"pipeline {pipeline!r} is not served here (serving: {served})"
            )
        self.refuse_if_full()
        assert self.public_url is not None, "serve() first"
        return await make_call(client, self.status_board, public_url=self.public_url, **options)

    def shutdown(self) -> None:
        """Begin a graceful shutdown: refuse new calls, let calls in flight run on for
        ``drain_timeout`` seconds, wind the rest down (spoken notice), then stop listening."""
        self._shutdown.set()

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`shutdown` has drained; reports the public base URL once
        listening."""
        config = self.config
        raise_descriptor_limit()
        main = _listen(config.host, config.port, config.http_fd)
        sockets = [main]
        if config.media_port is not None:
            sockets.append(_listen(config.host, config.media_port, config.media_fd))
        try:
            await self._serve(sockets, task_status)
        finally:
            for sock in sockets:
                sock.close()

    async def _serve(self, sockets: Sequence[socket.socket], task_status: Any) -> None:
        config = self.config
        if self.public_url is None:
            self.public_url = _base_url(sockets[0], "http")
        switchboard = self.switchboard
        if config.media_url:
            switchboard.media_url = config.media_url
        elif len(sockets) > 1 and not config.public_url:
            self.media_port = sockets[1].getsockname()[1]
            switchboard.media_url = _base_url(sockets[1], "ws") + MEDIA_PATH
        else:
            switchboard.media_url = stream_url(self.public_url, MEDIA_PATH)
        if len(sockets) > 1:
            self.media_port = sockets[1].getsockname()[1]
        media = MediaRoute(
            MEDIA_PATH, switchboard.authorize_upgrade, switchboard.run_call, MAX_MESSAGE_BYTES
        )
        async with (
            open_http_app(self.app, config.http, graceful_timeout=config.shutdown_timeout) as http,
            trio.open_nursery() as nursery,
        ):
            self._triggers.nursery = nursery
            door = self.door = FrontDoor(
                media, http, limits=config.http, max_connections=config.max_connections
            )
            # Smart Turn loads when the first call that uses it starts (an echo server never
            # pays its ~45 MB); until then, and if loading fails, turns end by the VAD rule.
            await nursery.start(switchboard.smart_turn.run)
            nursery.start_soon(switchboard.monitor)
            door_scope = trio.CancelScope()

            async def run_door() -> None:
                with door_scope:
                    await door.serve(sockets)

            nursery.start_soon(run_door)
            if self.media_port is not None:
                log.info("media port %d: %s", self.media_port, switchboard.media_url)
            log.info(
                "listening on %s (public URL %s)", _base_url(sockets[0], "http"), self.public_url
            )
            task_status.started(self.public_url)
            await self._shutdown.wait()
            notice = config.shutdown_notice
            await switchboard.drain(
                config.drain_timeout,
                partial(self._notice_audio, notice) if notice else None,
                config.shutdown_timeout,
            )
            door_scope.cancel()
            nursery.cancel_scope.cancel()

    @staticmethod
    async def _notice_audio(text: str) -> bytes | None:
        """``text`` spoken as 8 kHz μ-law, or ``None`` if speech synthesis fails."""
        from engine.tts import speak_ulaw  # eSpeak NG loads only when a notice is spoken

        try:
            return await trio.to_thread.run_sync(speak_ulaw, text)
        except Exception:
            log.exception("could not synthesize the shutdown notice; closing without it")
            return None


async def serve(
    config: ServerConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a :class:`VoiceServer` for ``config`` until cancelled (``nursery.start(serve, cfg)``
    reports its public URL)."""
    await VoiceServer(config).serve(task_status=task_status)
