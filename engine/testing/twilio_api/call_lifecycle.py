"""How an emulated call runs, from queued to its final status.

queued → initiated → ringing → answered (or busy, no-answer, failed, as the callee is scripted
with :class:`~engine.testing.twilio_api.records.CalleeBehaviour`). On answer the call fetches its
TwiML (inline, or a signed voice webhook to ``Url``), dials the ``<Connect><Stream>`` with
:func:`~engine.testing.stream.open_stream`, and plays the callee's part (speak, hang up).
Signed status callbacks report the progress.

Twilio's seconds (``Timeout``, ``TimeLimit``, the durations reported) run on the emulated
clock, ``time_scale`` real seconds per emulated second; callee scripts are in real seconds.
"""

from __future__ import annotations

import math
import time
from urllib.parse import urljoin, urlsplit, urlunsplit

import trio
import trio_websocket

from engine.control.twiml import ConnectStream, parse_connect_stream
from engine.testing.stream import EmulatedStream, open_stream
from engine.testing.twilio_api.account import Account
from engine.testing.twilio_api.records import (
    FINAL_STATUSES,
    EmulatedCallState,
    TwimlSource,
    WebhookAttempt,
)
from engine.testing.twilio_api.resources import API_VERSION, rfc2822
from engine.testing.twilio_api.webhooks import WebhookSender

__all__ = ["CallLifecycle", "call_webhook_params"]

_STEP_S = 0.01
"""Real seconds between a call's queued, initiated and ringing steps."""
_CALL_PRICE_PER_MINUTE = 0.014


def call_webhook_params(call: EmulatedCallState, call_status: str) -> dict[str, str]:
    """The fields every voice webhook about ``call`` carries (PROTOCOL.md §3)."""
    return {
        "AccountSid": call.account_sid,
        "ApiVersion": API_VERSION,
        "CallSid": call.sid,
        "CallStatus": call_status,
        "Called": call.to,
        "Caller": call.from_,
        "Direction": "outbound-api",
        "From": call.from_,
        "To": call.to,
    }


class CallLifecycle:
    """Runs each call of the emulated account as a task, and steers it while it runs."""

    def __init__(self, account: Account, webhooks: WebhookSender, nursery: trio.Nursery) -> None:
        self._account = account
        self._webhooks = webhooks
        self._nursery = nursery

    def start(self, call: EmulatedCallState) -> None:
        """Run ``call`` in the background, from queued to its final status."""
        self._nursery.start_soon(self._run_call, call, name=f"emulated call {call.sid}")

    def request_end(self, call: EmulatedCallState, final: str, reason: str) -> None:
        """End ``call`` now with status ``final`` (unless an end is already under way)."""
        if call._final is None:
            call._final = final
            call.end_reason = reason
        if call._scope is not None:
            call._scope.cancel()

    def redirect(self, call: EmulatedCallState, source: TwimlSource) -> None:
        """Make ``call`` follow the TwiML at ``source``: now if it is live, else on answer."""
        if call.status == "in-progress":
            call._redirect = source
            if call._twiml_scope is not None:
                call._twiml_scope.cancel()
        else:
            call._source = source

    def apply_time_limit(self, call: EmulatedCallState) -> None:
        """Move a live call's deadline to match its (changed) ``time_limit``."""
        if call._limit_scope is not None and call._answered_at is not None:
            scale = self._account.time_scale
            call._limit_scope.deadline = call._answered_at + call.time_limit * scale

    async def _run_call(self, call: EmulatedCallState) -> None:
        scope = trio.CancelScope()
        call._scope = scope
        if call._final is not None:
            scope.cancel()
        final, sip = "failed", 500
        with scope:
            final, sip = await self._dial(call)
        if call._final is not None:
            final, sip = call._final, (487 if call._final == "canceled" else 200)
        self._finish(call, final, sip)

    async def _dial(self, call: EmulatedCallState) -> tuple[str, int]:
        """Take the call from queued to its end; return the final status and SIP code."""
        behaviour = call.behaviour
        await trio.sleep(_STEP_S)
        call.queue_time_ms = int((time.time() - call.date_created) * 1000)
        call.start_time = time.time()
        call._initiated = True
        self._advance(call, "initiated")
        await trio.sleep(_STEP_S)
        if behaviour.outcome == "fail":
            call.end_reason = "failed"
            return "failed", behaviour.sip_response_code or 404
        self._advance(call, "ringing")
        ring_limit = call.timeout * self._account.time_scale
        if behaviour.outcome == "busy":
            await trio.sleep(min(behaviour.ring_seconds, ring_limit))
            call.end_reason = "busy"
            return "busy", 486
        if behaviour.outcome == "no-answer" or behaviour.ring_seconds >= ring_limit:
            await trio.sleep(ring_limit)
            call.end_reason = "no-answer"
            return "no-answer", 487
        await trio.sleep(behaviour.ring_seconds)
        call._answered_at = trio.current_time()
        if call.param("MachineDetection"):
            call.answered_by = "human"
        self._advance(call, "in-progress")
        deadline = call._answered_at + call.time_limit * self._account.time_scale
        with trio.CancelScope(deadline=deadline) as limit:
            call._limit_scope = limit
            await self._converse(call)
        call._limit_scope = None
        if limit.cancelled_caught:
            call.end_reason = "time-limit"
        return "completed", 200

    def _advance(self, call: EmulatedCallState, status: str) -> None:
        call.progress.append(status)
        if status != "initiated":
            call.status = status
        call.date_updated = time.time()
        event = {"in-progress": "answered"}.get(status, status)
        self._status_event(call, "completed" if status in FINAL_STATUSES else event, status)

    def _finish(self, call: EmulatedCallState, final: str, sip: int) -> None:
        call.end_time = time.time()
        call.sip_response_code = sip
        if call._answered_at is not None:
            elapsed = (trio.current_time() - call._answered_at) / self._account.time_scale
            call.duration = max(0, min(call.time_limit, round(elapsed)))
            minutes = max(1, math.ceil(call.duration / 60))
            call.price = f"{-_CALL_PRICE_PER_MINUTE * minutes:.5f}"
        else:
            call.duration = 0
        if call.end_reason is None:
            call.end_reason = final
        if call._initiated:
            self._advance(call, final)
        else:  # canceled while queued: no status callback fires (PROTOCOL.md §3)
            call.progress.append(final)
            call.status = final
        if call._outbox is not None:
            call._outbox.close()
        call.ended.set()

    async def _converse(self, call: EmulatedCallState) -> None:
        """Follow the call's TwiML (and any redirects) until there is nothing left to do."""
        source: TwimlSource | None = call._source
        while source is not None:
            with trio.CancelScope() as scope:
                call._twiml_scope = scope
                await self._follow(call, source)
            call._twiml_scope = None
            source, call._redirect = call._redirect, None

    async def _follow(self, call: EmulatedCallState, source: TwimlSource) -> None:
        twiml = await self._fetch_twiml(call, source)
        if twiml is None:
            call.end_reason = "twiml-failed"
            return
        call.twiml.append(twiml)
        try:
            connect = parse_connect_stream(twiml)
        except ValueError as exc:
            if "holds no <Connect><Stream>" not in str(exc):
                call.errors.append(f"12100 Document parse failure: {exc}")
                call.end_reason = "twiml-failed"
            else:
                call.end_reason = "twiml-ended"
            return
        await self._stream(call, connect, source)

    async def _fetch_twiml(self, call: EmulatedCallState, source: TwimlSource) -> str | None:
        if source.url is None:
            return source.twiml or ""
        targets = [(source.url, source.method)]
        if source.fallback_url:
            targets.append((source.fallback_url, source.fallback_method))
        params = call_webhook_params(call, "in-progress")
        for url, method in targets:
            attempt = await self._webhooks.send("twiml", url, method, params)
            call.twiml_requests.append(attempt)
            if attempt.ok:
                return attempt.text
            why = attempt.error or f"HTTP {attempt.status}"
            call.errors.append(f"11200 HTTP retrieval failure: {method} {url}: {why}")
            params = {**params, "ErrorCode": "11200", "ErrorUrl": url}
        return None

    async def _stream(
        self, call: EmulatedCallState, connect: ConnectStream, source: TwimlSource
    ) -> None:
        url = connect.url
        if source.url is not None and "://" not in url:
            parts = urlsplit(urljoin(source.url, url))
            scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
            url = urlunsplit((scheme, parts.netloc, parts.path, "", ""))
        try:
            async with open_stream(
                url,
                auth_token=self._account.auth_token,
                call_sid=call.sid,
                account_sid=call.account_sid,
                parameters=connect.parameters,
            ) as stream:
                call.stream = stream
                call.records.append(stream.record)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._speak, call, stream)
                    if call.behaviour.hang_up_after is not None:
                        nursery.start_soon(self._hang_up_later, call, nursery.cancel_scope)
                    await stream.closed.wait()
                    nursery.cancel_scope.cancel()
        except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
            why = exc.__cause__ or exc  # trio-websocket wraps the OSError in a HandshakeError
            call.errors.append(f"31920 Stream - WebSocket - Handshake Error: {url}: {why!r}")
            call.end_reason = "stream-failed"
            return
        finally:
            call.stream = None
        # Only a hang-up by the callee or the stream's end get here (the rest cancels). Not
        # ``record.closed_by_server``: the microphone can notice the close first and leave it unset.
        if call.end_reason != "callee-hung-up":
            call.end_reason = "stream-closed"

    async def _speak(self, call: EmulatedCallState, stream: EmulatedStream) -> None:
        if call.behaviour.say:
            await stream.pause(call.behaviour.say_after)
            await stream.say(call.behaviour.say)

    async def _hang_up_later(self, call: EmulatedCallState, scope: trio.CancelScope) -> None:
        assert call._answered_at is not None and call.behaviour.hang_up_after is not None
        await trio.sleep_until(call._answered_at + call.behaviour.hang_up_after)
        call.end_reason = "callee-hung-up"
        scope.cancel()

    def _status_event(self, call: EmulatedCallState, event: str, status: str) -> None:
        """Send the status callback for ``event``, if the call asked for it."""
        if (
            not call.status_callback
            or event not in call.status_callback_events
            or not self._account.status_callbacks_enabled
        ):
            return
        params = call_webhook_params(call, status)
        params.update(
            CallbackSource="call-progress-events",
            SequenceNumber=str(call._sequence),
            Timestamp=rfc2822(time.time()) or "",
        )
        call._sequence += 1
        if event == "completed":
            duration = call.duration or 0
            params.update(
                CallDuration=str(duration),
                Duration=str(math.ceil(duration / 60)),
                SipResponseCode=str(call.sip_response_code or 200),
            )
        if call.answered_by:
            params["AnsweredBy"] = call.answered_by
        attempt = WebhookAttempt(
            "call-status", call.status_callback, call.status_callback_method, params, 0.0
        )
        self._webhooks.send_status(call.callbacks, attempt, in_order=lambda: self._outbox(call))

    def _outbox(self, call: EmulatedCallState) -> trio.MemorySendChannel[WebhookAttempt]:
        """The queue of ``call``'s in-order status callbacks (opened on first use)."""
        if call._outbox is None:
            call._outbox = self._webhooks.open_queue(call.callbacks)
        return call._outbox
