"""The voice server: a quart-trio app on hypercorn, plus a direct ASGI route for media streams.

Routes: ``POST /twilio/voice`` answers a signed voice webhook with ``<Connect><Stream>`` TwiML
whose ``<Parameter>`` s carry the call's pipeline and a short-lived token bound to the CallSid
(and fires the ``inboundCall`` trigger); ``WS /twilio/media`` runs a
:class:`~engine.media.session.CallSession` once that token verifies; ``POST /twilio/status``
feeds waiting ``makeCall`` s; ``POST /twilio/whatsapp`` fires ``newWhatsappMessage``;
``GET /healthz`` (503 while draining); ``GET /metrics`` (Prometheus). Every webhook checks
``X-Twilio-Signature`` against the public URL.

Admission control (:mod:`engine.admission`) answers the voice webhook with refusal TwiML when
this process is at its call ceiling, its event loop lags, or it is draining. Shutdown drains:
new calls are refused while calls in flight run on for ``drain_timeout`` seconds; those still
running are then wound down (a spoken notice, then a normal close).

The media socket is served straight from the ASGI callable rather than through Quart's websocket
machinery: every inbound frame of every call crosses it, and Quart would add a task hop and a
signal dispatch per frame. Everything else is ordinary Quart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.typing import ASGIReceiveCallable as Receive
from hypercorn.typing import ASGISendCallable as Send
from hypercorn.typing import (
    Scope,
    WebsocketAcceptEvent,
    WebsocketCloseEvent,
    WebsocketScope,
    WebsocketSendEvent,
)
from quart import Response, request
from quart_trio import QuartTrio

from engine import metrics
from engine.admission import Admission, AdmissionConfig
from engine.control.calls import CallStatusBoard, make_call
from engine.control.rest import TwilioClient
from engine.control.signature import is_valid_signature
from engine.control.token import StreamTokens
from engine.control.twiml import (
    connect_stream,
    empty_response,
    reject,
    say_and_hang_up,
    stream_url,
)
from engine.errors import (
    CLOSE_GOING_AWAY,
    ConfigError,
    ConnectionClosed,
    Overloaded,
    TokenError,
)
from engine.loader import BUNDLED, load_stage_factory
from engine.media.listener import serve_media
from engine.media.protocol import MAX_MESSAGE_BYTES, Start
from engine.media.session import CallSession, MediaSocket, SessionConfig
from engine.media.stage import Stage, StageFactory

__all__ = ["ServerConfig", "TriggerHandler", "Triggers", "VoiceServer"]

log = logging.getLogger(__name__)

MEDIA_PATH = "/twilio/media"
TRIGGER_WAIT_S = 1.0
"""How long a webhook waits for a free trigger-handler slot before dropping the event."""
MAX_WEBHOOK_BYTES = 64 * 1024
"""Largest webhook body accepted (Twilio's are a few KiB; an SMS body is at most 1600 chars)."""
INSECURE_SECRET_ENV = "VOICE_ENGINE_STREAM_SECRET"
"""Internal: the stream-token key ``serve --workers N --insecure`` hands its workers."""


TriggerHandler = Callable[[dict[str, Any]], Awaitable[None]]
"""Receives a trigger's output object."""
PIPELINE_PARAMETER = "pipeline"


@dataclass(frozen=True, slots=True)
class Triggers:
    """Handlers for the component's triggers; each runs in the server's nursery, off the request.

    ``inbound_call`` gets ``{callSid, from, to, direction, accountSid, callStatus}`` for every
    inbound call; ``whatsapp_message`` gets every field Twilio posted for an incoming WhatsApp
    message. A handler that raises is logged; it never fails the webhook.
    """

    inbound_call: TriggerHandler | None = None
    whatsapp_message: TriggerHandler | None = None
    max_concurrent: int = 64


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
    """Serve media streams on their own lean listener at this port (0 = any) instead of
    through hypercorn; Twilio is sent ``media_url``, or ws://HOST:PORT/twilio/media locally."""
    media_url: str | None = None
    """The public ``wss://…/twilio/media`` URL of the media listener, when a proxy routes it."""
    insecure: bool = False
    """Run without an auth token: no signature checks, stream tokens keyed per process."""
    pipelines: frozenset[str] = frozenset(BUNDLED)
    """The pipeline names a call may ask for (``?pipeline=`` on the voice webhook, as
    ``makeCall`` sets it); anything else is refused, so a URL can never import arbitrary code."""
    http_fd: int | None = None
    """An inherited listening socket to serve HTTP on instead of binding ``host:port``
    (``serve --workers N`` shares one socket among its workers this way)."""
    media_fd: int | None = None
    """Likewise for the media listener."""
    session: SessionConfig = field(default_factory=SessionConfig)
    triggers: Triggers = field(default_factory=Triggers)
    token_ttl: float = 120.0
    previous_auth_tokens: tuple[str, ...] = field(default=(), repr=False)
    """Auth Tokens rotated out but still accepted (webhook signatures, stream tokens) during a
    grace period, so a token can be rotated without dropping a call."""
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
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


def _guard_hypercorn_send_race() -> None:
    """Keep one closing connection from crashing the whole server.

    Hypercorn's trio ``TCPServer`` (0.17–0.18) half-closes a connection with ``send_eof()``
    outside its send lock; when a WebSocket closes while a frame to that peer is being sent,
    ``send_all`` raises ``trio.BusyResourceError``, which escapes and takes down the server and
    every other call on it. The connection is closing either way: treat it as closed.
    """
    original = TCPServer.protocol_send
    if getattr(original, "_voice_engine_guard", False):
        return

    async def protocol_send(self: TCPServer, event: Event) -> None:
        try:
            await original(self, event)
        except trio.BusyResourceError:
            await self.protocol.handle(Closed())

    protocol_send._voice_engine_guard = True  # type: ignore[attr-defined]
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]


_guard_hypercorn_send_race()


class _AsgiMediaSocket:
    """A :class:`~engine.media.session.MediaSocket` over one accepted ASGI websocket."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._closed = False

    async def receive(self) -> str | bytes:
        if self._closed:
            raise ConnectionClosed(None, "closed")
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            return text if text is not None else message.get("bytes") or b""
        self._closed = True
        raise ConnectionClosed(message.get("code"), "peer closed")  # type: ignore[arg-type]

    async def send(self, message: str) -> None:
        if self._closed:
            raise ConnectionClosed(None, "closed")
        await self._send(WebsocketSendEvent(type="websocket.send", bytes=None, text=message))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        reason = reason.encode()[:123].decode(errors="ignore")
        try:
            await self._send(WebsocketCloseEvent(type="websocket.close", code=code, reason=reason))
        except Exception:  # the peer may be gone already; closing is best effort
            log.debug("close after peer left", exc_info=True)


class VoiceServer:
    """The ASGI application and its lifecycle (``serve``, ``shutdown``)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        secret = (
            config.auth_token
            or os.environ.get(INSECURE_SECRET_ENV)  # shared by the workers of --insecure serve
            or secrets.token_urlsafe(32)
        )
        self.tokens = StreamTokens(secret, ttl=config.token_ttl)
        self._previous_tokens = [
            StreamTokens(old, ttl=config.token_ttl) for old in config.previous_auth_tokens
        ]
        self.admission = Admission(config.admission)
        self._meters: dict[CallSession, metrics.CallMeter] = {}
        self.public_url = config.public_url.rstrip("/") if config.public_url else None
        self.sessions: set[CallSession] = set()
        self.status_board = CallStatusBoard()
        """Status callbacks for the ``makeCall`` s waiting in this process."""
        self._factories: dict[str, StageFactory] = {}
        self._trigger_limiter = trio.CapacityLimiter(config.triggers.max_concurrent)
        self._nursery: trio.Nursery | None = None
        self.media_port: int | None = None
        """The media listener's bound port, when it has one."""
        self._idle = trio.Event()
        self._idle.set()
        self._shutdown = trio.Event()
        self._closing = False
        self.app = self._make_app()

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == MEDIA_PATH:
            await self._media(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _url(self, path: str, query: bytes | str) -> str:
        query = query.decode("latin-1") if isinstance(query, bytes) else query
        base = self.public_url or ""
        return base + path + (f"?{query}" if query else "")

    def _signed(self, url: str, params: Mapping[str, list[str]], signature: str | None) -> bool:
        if self.config.insecure:
            return True
        assert self.config.auth_token is not None
        return any(
            is_valid_signature(url, params, signature, token)
            for token in (self.config.auth_token, *self.config.previous_auth_tokens)
        )

    @property
    def media_url(self) -> str:
        """The ``ws(s)://…/twilio/media`` URL Twilio dials (and the handshake is signed for)."""
        assert self.public_url is not None
        if self.config.media_url:
            return self.config.media_url
        if self.media_port is not None and not self.config.public_url:
            return f"ws://{self.config.host}:{self.media_port}{MEDIA_PATH}"
        return stream_url(self.public_url, MEDIA_PATH)

    def _upgrade_allowed(self, target: str, headers: Mapping[str, str]) -> bool:
        query = target.partition("?")[2]
        url = self.media_url + (f"?{query}" if query else "")
        if self._closing:
            return False
        return self._signed(url, {}, headers.get("x-twilio-signature"))

    async def _media(self, scope: WebsocketScope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        if (await receive())["type"] != "websocket.connect":
            return
        if not self._upgrade_allowed(scope["path"] + (f"?{query}" if query else ""), headers):
            log.warning("media stream refused: bad X-Twilio-Signature on the handshake")
            # Closing before accepting makes hypercorn answer the handshake with HTTP 403.
            await send(WebsocketCloseEvent(type="websocket.close", code=1008, reason=None))
            return
        await send(WebsocketAcceptEvent(type="websocket.accept", subprotocol=None, headers=[]))
        await self.run_call(_AsgiMediaSocket(receive, send))

    async def run_call(self, socket: MediaSocket) -> None:
        """Run one accepted media socket as a call of this server."""
        session = CallSession(
            socket,
            self._select_stage,
            authorize=self._authorize,
            config=self.config.session,
        )
        self.sessions.add(session)
        meter = self._meters[session] = metrics.CallMeter()
        self.admission.stream_started()
        metrics.CALLS_ACTIVE.inc()
        if len(self.sessions) == 1:
            self._idle = trio.Event()
        try:
            outcome = await session.run()
        finally:
            self.sessions.discard(session)
            del self._meters[session]
            meter.fold(session.counts())
            self.admission.stream_ended()
            metrics.CALLS_ACTIVE.dec()
            if not self.sessions:
                self._idle.set()
        metrics.CALLS_ENDED.labels(outcome.reason).inc()
        if outcome.reason in ("stage-error", "stage-stalled"):
            metrics.STAGE_ERRORS.labels(outcome.reason).inc()

    def _authorize(self, start: Start) -> Mapping[str, str]:
        try:
            parameters = self.tokens.verify(start.custom_parameters, start.call_sid)
        except TokenError:
            for previous in self._previous_tokens:
                with contextlib.suppress(TokenError):
                    parameters = previous.verify(start.custom_parameters, start.call_sid)
                    break
            else:
                raise
        self.admission.claim(start.call_sid)
        return parameters

    def refuse_if_full(self) -> None:
        """Raise :class:`~engine.errors.Overloaded` if this server would refuse a new call now
        (``makeCall`` asks before placing one)."""
        reason = self.admission.refusal(trio.current_time())
        if reason is not None:
            metrics.CALLS_REFUSED.labels(reason).inc()
            raise Overloaded(reason)

    async def make_call(self, client: TwilioClient, **options: Any) -> dict[str, Any]:
        """The ``makeCall`` action on this server: refuse at once (:class:`Overloaded`) if it
        could not take the call, else place it (see :func:`~engine.control.calls.make_call`
        for ``options``) and return its outcome when it ends."""
        self.refuse_if_full()
        assert self.public_url is not None, "serve() first"
        return await make_call(client, self.status_board, public_url=self.public_url, **options)

    async def _monitor(self) -> None:
        """Measure event-loop lag (for admission and metrics); fold call counters into metrics."""
        period, lag, tick = 0.1, 0.0, 0
        while True:
            before = trio.current_time()
            await trio.sleep(period)
            # A spike stays visible for a few periods, then decays.
            lag = max(trio.current_time() - before - period, lag * 0.7)
            self.admission.note_loop_lag(lag)
            tick += 1
            if tick % 10 == 0:
                metrics.EVENT_LOOP_LAG.set(lag)
                for session, meter in self._meters.items():
                    meter.fold(session.counts())

    def _select_stage(self, parameters: Mapping[str, str]) -> Stage:
        name = parameters.get(PIPELINE_PARAMETER)
        if not name:
            return self.config.stage_factory()
        if name not in self.config.pipelines:
            raise ConfigError(f"pipeline {name[:80]!r} is not served here")
        factory = self._factories.get(name)
        if factory is None:
            factory = self._factories[name] = load_stage_factory(name)
        return factory()

    async def _fire(self, handler: TriggerHandler | None, output: dict[str, Any]) -> None:
        if handler is None or self._nursery is None:
            return
        # Wait (briefly) for room before spawning, so the number of running handlers stays
        # bounded; handlers that stay stuck (a consumer that stopped) cost their events, never
        # the webhook: Twilio gives up on a slow answer, and the call with it.
        borrower = object()
        with trio.move_on_after(TRIGGER_WAIT_S):
            await self._trigger_limiter.acquire_on_behalf_of(borrower)
        if borrower not in self._trigger_limiter.statistics().borrowers:
            log.warning("trigger handlers are all busy: an event was dropped")
            return

        async def run() -> None:
            try:
                await handler(output)
            except Exception:
                log.exception("trigger handler failed")
            finally:
                self._trigger_limiter.release_on_behalf_of(borrower)

        self._nursery.start_soon(run)

    async def _signed_form(self) -> dict[str, str] | Response:
        if not self.config.insecure and not request.headers.get("X-Twilio-Signature"):
            # Refused before the body is read: unsigned requests cost next to nothing.
            return Response("missing X-Twilio-Signature\n", status=403, mimetype="text/plain")
        form = await request.form
        params = {name: form.getlist(name) for name in form}
        url = self._url(request.path, request.query_string)
        if not self._signed(url, params, request.headers.get("X-Twilio-Signature")):
            log.warning("webhook refused: bad X-Twilio-Signature for %s", url)
            return Response("invalid X-Twilio-Signature\n", status=403, mimetype="text/plain")
        return {name: form.get(name, "") for name in form}

    def _refusal(self, fields: Mapping[str, str]) -> str:
        """TwiML for a call refused by admission control: an unanswered inbound call is
        rejected (busy tone, no charge); an answered one hears the busy message."""
        ringing = fields.get("CallStatus", "ringing") == "ringing"
        if fields.get("Direction", "inbound") == "inbound" and ringing:
            return reject("busy")
        return say_and_hang_up(self.config.busy_message)

    def _make_app(self) -> QuartTrio:
        app = QuartTrio("voice-engine")
        # Twilio's webhooks are small forms; refuse big bodies before parsing them.
        app.config["MAX_CONTENT_LENGTH"] = MAX_WEBHOOK_BYTES

        @app.post("/twilio/voice")
        async def voice() -> Response:
            fields = await self._signed_form()
            if isinstance(fields, Response):
                return fields
            call_sid = fields.get("CallSid", "")
            if not call_sid:
                return Response("CallSid is required\n", status=400, mimetype="text/plain")
            parameters = {}
            pipeline = request.args.get(PIPELINE_PARAMETER)
            if pipeline:
                if pipeline not in self.config.pipelines:
                    log.warning(
                        "call %s asked for pipeline %r, which is not served", call_sid, pipeline
                    )
                    return Response(
                        f"pipeline {pipeline[:80]!r} is not served here\n",
                        status=400,
                        mimetype="text/plain",
                    )
                parameters[PIPELINE_PARAMETER] = pipeline
            assert self.public_url is not None
            try:
                twiml = connect_stream(
                    self.media_url,
                    self.tokens.parameters_with_token(call_sid, parameters),
                )
            except ConfigError as exc:  # a ?pipeline= that a <Parameter> cannot carry
                return Response(f"{exc}\n", status=400, mimetype="text/plain")
            refused = self.admission.admit(call_sid, trio.current_time())
            if refused is not None:
                metrics.CALLS_REFUSED.labels(refused).inc()
                log.warning("call %s refused: %s", call_sid, refused)
                return Response(self._refusal(fields), status=200, mimetype="text/xml")
            metrics.CALLS_ADMITTED.inc()
            log.info("call %s admitted (%s)", call_sid, fields.get("Direction", "inbound"))
            if fields.get("Direction", "inbound") == "inbound":
                await self._fire(
                    self.config.triggers.inbound_call,
                    {
                        "callSid": call_sid,
                        "from": fields.get("From"),
                        "to": fields.get("To"),
                        "direction": fields.get("Direction"),
                        "accountSid": fields.get("AccountSid"),
                        "callStatus": fields.get("CallStatus"),
                    },
                )
            return Response(twiml, status=200, mimetype="text/xml")

        @app.post("/twilio/status")
        async def status() -> Response:
            fields = await self._signed_form()
            if isinstance(fields, Response):
                return fields
            update = self.status_board.post(fields)
            if update is not None:
                log.info("call %s: %s", update.call_sid, update.status)
            return Response("", status=204)

        @app.post("/twilio/whatsapp")
        async def whatsapp() -> Response:
            fields = await self._signed_form()
            if isinstance(fields, Response):
                return fields
            await self._fire(self.config.triggers.whatsapp_message, dict(fields))
            return Response(empty_response(), status=200, mimetype="text/xml")

        @app.get("/healthz")
        async def healthz() -> tuple[dict[str, Any], int]:
            draining = self._shutdown.is_set()
            body = {"status": "draining" if draining else "ok", "calls": len(self.sessions)}
            return body, 503 if draining else 200

        @app.get("/metrics")
        async def prometheus() -> Response:
            return Response(metrics.render(), status=200, content_type=metrics.CONTENT_TYPE)

        return app

    # -- lifecycle ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Begin a graceful shutdown: refuse new calls, let calls in flight run on for
        ``drain_timeout`` seconds, wind the rest down (spoken notice), then stop listening."""
        self._shutdown.set()

    async def _shutdown_trigger(self) -> None:
        await self._shutdown.wait()
        self.admission.drain()
        config = self.config
        if self.sessions and config.drain_timeout > 0:
            log.info(
                "draining: refusing new calls, %d in flight may run on for %.0f s",
                len(self.sessions),
                config.drain_timeout,
            )
            with trio.move_on_after(config.drain_timeout):
                await self._idle.wait()
        if self.sessions and config.shutdown_notice:
            log.info("winding down %d call(s)", len(self.sessions))
            with trio.move_on_after(config.shutdown_timeout):
                notice = await self._notice_audio(config.shutdown_notice)
                for session in list(self.sessions):
                    session.wind_down(notice)
                await self._idle.wait()
        self._closing = True
        if self.sessions:
            log.info("shutting down: ending %d call(s)", len(self.sessions))
        for session in list(self.sessions):
            session.end("shutdown", CLOSE_GOING_AWAY)
        with trio.move_on_after(config.shutdown_timeout):
            await self._idle.wait()

    @staticmethod
    async def _notice_audio(text: str) -> bytes | None:
        """``text`` spoken as 8 kHz μ-law, or ``None`` if speech synthesis fails."""
        from engine.tts import speak_ulaw  # eSpeak NG loads only when a notice is spoken

        try:
            return await trio.to_thread.run_sync(speak_ulaw, text)
        except Exception:
            log.exception("could not synthesize the shutdown notice; closing without it")
            return None

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`shutdown`; reports the public base URL once listening."""
        hconfig = HypercornConfig()
        if self.config.http_fd is not None:
            hconfig.bind = [f"fd://{self.config.http_fd}"]
        else:
            hconfig.bind = [f"{self.config.host}:{self.config.port}"]
        hconfig.websocket_max_message_size = MAX_MESSAGE_BYTES
        hconfig.accesslog = None
        hconfig.errorlog = logging.getLogger("hypercorn.error")
        hconfig.graceful_timeout = self.config.shutdown_timeout
        async with trio.open_nursery() as nursery:
            self._nursery = nursery

            async def http(task_status: trio.TaskStatus[list[str]]) -> None:
                await hypercorn_serve(
                    self,
                    hconfig,
                    shutdown_trigger=self._shutdown_trigger,
                    mode="asgi",
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()  # the media listener goes down with it

            nursery.start_soon(self._monitor)
            binds: list[str] = await nursery.start(http)
            if self.public_url is None:
                self.public_url = binds[0].rstrip("/")
            if self.config.media_port is not None:
                self.media_port = await nursery.start(
                    partial(
                        serve_media,
                        self.run_call,
                        host=self.config.host,
                        port=self.config.media_port,
                        path=MEDIA_PATH,
                        check=self._upgrade_allowed,
                        max_message_bytes=MAX_MESSAGE_BYTES,
                        sock=(
                            socket.socket(fileno=self.config.media_fd)
                            if self.config.media_fd is not None
                            else None
                        ),
                    )
                )
                log.info("media listener on port %d: %s", self.media_port, self.media_url)
            log.info("listening on %s (public URL %s)", ", ".join(binds), self.public_url)
            task_status.started(self.public_url)
