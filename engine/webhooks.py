"""The HTTP routes: Twilio's webhooks, health and metrics, as a quart-trio application.

- ``POST /twilio/voice`` — a signed voice webhook: admission, then ``<Connect><Stream>`` TwiML
  whose ``<Parameter>`` s carry the call's pipeline and a short-lived token bound to its CallSid
  (or refusal TwiML); fires the ``inboundCall`` trigger for inbound calls.
- ``POST /twilio/status`` — call status callbacks, for the ``makeCall`` s waiting here.
- ``POST /twilio/whatsapp`` — fires ``newWhatsappMessage`` for WhatsApp messages (not SMS).
- ``GET /healthz`` (503 while draining), ``GET /metrics`` (Prometheus text format).

Every webhook passes the signed-form gate first: ``X-Twilio-Signature`` checked against the
public URL before the form is used (an unsigned request is refused before its body is read).
The media socket is not a route here: the front door (:mod:`engine.transport`) takes it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from engine import metrics
from engine.control.calls import CallStatusBoard
from engine.control.signature import SIGNATURE_HEADER
from engine.control.twiml import connect_stream, empty_response, reject, say_and_hang_up
from engine.errors import ConfigError, EngineError
from engine.switchboard import PIPELINE_PARAMETER, Switchboard

__all__ = ["MAX_WEBHOOK_BYTES", "TriggerHandler", "Triggers", "is_whatsapp", "make_app"]

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 64 * 1024
"""Largest webhook body accepted (Twilio's are a few KiB; an SMS body is at most 1600 chars)."""
TRIGGER_WAIT_S = 1.0
"""How long a webhook waits for a free trigger-handler slot before dropping the event."""

TriggerHandler = Callable[[dict[str, Any]], Awaitable[None]]
"""Receives a trigger's output object."""


@dataclass(frozen=True, slots=True)
class Triggers:
    """Handlers for the component's triggers; each runs in the server's nursery, off the request.

    ``inbound_call`` gets ``{callSid, from, to, direction, accountSid, callStatus}`` (strings)
    for every inbound call; ``whatsapp_message`` gets every field Twilio posted for an incoming
    WhatsApp message (``From`` and ``To`` are ``whatsapp:`` addresses; an SMS posted to the
    same route fires nothing). A handler that raises is logged; it never fails the webhook.
    """

    inbound_call: TriggerHandler | None = None
    whatsapp_message: TriggerHandler | None = None
    max_concurrent: int = 64
    sub_workflow: str | None = None
    """The ``inboundCall`` trigger's ``subWorkflow``: the pipeline inbound calls run (one of
    ``ServerConfig.pipelines``); ``None``: the server's default stage."""


class _TriggerRunner:
    """Runs trigger handlers in a nursery, at most ``max_concurrent`` at once."""

    def __init__(self, triggers: Triggers) -> None:
        self.triggers = triggers
        self._limiter = trio.CapacityLimiter(triggers.max_concurrent)
        self.nursery: trio.Nursery | None = None

    async def fire(self, handler: TriggerHandler | None, output: dict[str, Any]) -> None:
        if handler is None or self.nursery is None:
            return
        # Wait (briefly) for room before spawning, so the number of running handlers stays
        # bounded; handlers that stay stuck (a consumer that stopped) cost their events, never
        # the webhook: Twilio gives up on a slow answer, and the call with it.
        borrower = object()
        with trio.move_on_after(TRIGGER_WAIT_S):
            await self._limiter.acquire_on_behalf_of(borrower)
        if borrower not in self._limiter.statistics().borrowers:
            log.warning("trigger handlers are all busy: an event was dropped")
            return

        async def run() -> None:
            try:
                await handler(output)
            except Exception:
                log.exception("trigger handler failed")
            finally:
                self._limiter.release_on_behalf_of(borrower)

        self.nursery.start_soon(run)


def is_whatsapp(fields: Mapping[str, str]) -> bool:
    """Whether an inbound message's form is WhatsApp traffic: ``From`` and ``To`` are
    ``whatsapp:`` addresses (an SMS to the same number has bare E.164 ones)."""
    return all(fields.get(name, "").startswith("whatsapp:") for name in ("From", "To"))


def _text(body: str, status: int) -> Response:
    return Response(body, status=status, mimetype="text/plain")


def _twiml(body: str) -> Response:
    return Response(body, status=200, mimetype="text/xml")


def make_app(
    switchboard: Switchboard,
    status_board: CallStatusBoard,
    triggers: Triggers,
    *,
    public_url: Callable[[], str],
    draining: Callable[[], bool],
    busy_message: str,
) -> tuple[QuartTrio, _TriggerRunner]:
    """The routes over ``switchboard``; returns the app and its trigger runner (give the
    runner a nursery before serving)."""
    app = QuartTrio("voice-engine")
    # Twilio's webhooks are small forms; refuse big bodies before parsing them.
    app.config["MAX_CONTENT_LENGTH"] = MAX_WEBHOOK_BYTES
    runner = _TriggerRunner(triggers)
    auth = switchboard.auth

    async def signed_form() -> dict[str, str]:
        """The form of a webhook whose signature holds; raises SignatureError otherwise."""
        signature = request.headers.get(SIGNATURE_HEADER)
        if not auth.insecure and not signature:
            # Refused before the body is read: unsigned requests cost next to nothing.
            auth.check("", None, None)
        form = await request.form
        query = request.query_string.decode("latin-1")
        url = public_url() + request.path + (f"?{query}" if query else "")
        auth.check(url, {name: form.getlist(name) for name in form}, signature)
        return {name: form.get(name, "") for name in form}

    @app.errorhandler(EngineError)
    async def refuse(exc: EngineError) -> Response:
        log.warning("%s %s refused: %s", request.method, request.path, exc)
        return _text(f"{exc}\n", exc.http_status or 500)

    def refusal(fields: Mapping[str, str]) -> str:
        """TwiML for a call refused by admission control: an unanswered inbound call is
        rejected (busy tone, no charge); an answered one hears the busy message."""
        ringing = fields.get("CallStatus", "ringing") == "ringing"
        if fields.get("Direction", "inbound") == "inbound" and ringing:
            return reject("busy")
        return say_and_hang_up(busy_message)

    @app.post("/twilio/voice")
    async def voice() -> Response:
        fields = await signed_form()
        call_sid = fields.get("CallSid", "")
        if not call_sid:
            return _text("CallSid is required\n", 400)
        parameters = {}
        direction = fields.get("Direction", "inbound")
        pipeline = request.args.get(PIPELINE_PARAMETER)
        if not pipeline and direction == "inbound":
            pipeline = triggers.sub_workflow
        if pipeline:
            if pipeline not in switchboard.config.pipelines:
                raise ConfigError(f"pipeline {pipeline[:80]!r} is not served here", http_status=400)
            parameters[PIPELINE_PARAMETER] = pipeline
        try:
            twiml = connect_stream(
                switchboard.media_url,
                switchboard.tokens.parameters_with_token(call_sid, parameters),
            )
        except ConfigError as exc:  # a ?pipeline= that a <Parameter> cannot carry
            raise ConfigError(str(exc), http_status=400) from None
        await switchboard.ready()
        if switchboard.admit(call_sid) is not None:
            return _twiml(refusal(fields))
        log.debug("call %s admitted (%s)", call_sid, direction)
        if direction == "inbound":
            await runner.fire(
                triggers.inbound_call,
                {
                    "callSid": call_sid,
                    "from": fields.get("From", ""),
                    "to": fields.get("To", ""),
                    "direction": direction,
                    "accountSid": fields.get("AccountSid", ""),
                    "callStatus": fields.get("CallStatus", ""),
                },
            )
        return _twiml(twiml)

    @app.post("/twilio/status")
    async def status() -> Response:
        update = status_board.post(await signed_form())
        if update is not None:
            log.debug("call %s: %s", update.call_sid, update.status)
        return Response("", status=204)

    @app.post("/twilio/whatsapp")
    async def whatsapp() -> Response:
        fields = await signed_form()
        if is_whatsapp(fields):
            await runner.fire(triggers.whatsapp_message, dict(fields))
        else:
            log.info("a non-WhatsApp message reached /twilio/whatsapp: no trigger fired")
        return _twiml(empty_response())

    @app.get("/healthz")
    async def healthz() -> tuple[dict[str, Any], int]:
        if draining():
            return {"status": "draining", "calls": len(switchboard.sessions)}, 503
        return {"status": "ok", "calls": len(switchboard.sessions)}, 200

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), status=200, content_type=metrics.CONTENT_TYPE)

    return app, runner
