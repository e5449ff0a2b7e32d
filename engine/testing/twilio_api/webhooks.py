"""Twilio's signed webhooks, as the emulator sends them, and the record of every attempt.

:class:`WebhookSender` signs each request with the account's Auth Token (``X-Twilio-Signature``)
and sends it: TwiML fetches and status callbacks at once, later, or queued in order; inbound
messages as a plain POST. Every attempt becomes a :class:`WebhookAttempt`.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlencode

import httpx
import trio

from engine.control.signature import SIGNATURE_HEADER, compute_signature

if TYPE_CHECKING:
    from engine.testing.twilio_api.emulator import TwilioEmulator

__all__ = ["SHUFFLE_MAX_S", "CallbackOrder", "WebhookAttempt", "WebhookSender"]

log = logging.getLogger(__name__)

CallbackOrder = Literal["in-order", "shuffled"]
"""How status callbacks go out: one after another per call, or each after a random delay."""

SHUFFLE_MAX_S = 0.08
"""Shuffled callbacks each wait a random delay up to this long."""


@dataclass(slots=True)
class WebhookAttempt:
    """One request the emulator sent: a TwiML fetch, a status callback or an inbound message."""

    kind: str
    """``twiml``, ``call-status``, ``message-status`` or ``inbound-message``."""
    url: str
    method: str
    params: dict[str, str]
    sent_at: float
    """``trio.current_time()`` when the request left."""
    status: int | None = None
    """The HTTP status answered, or ``None`` when the request failed."""
    error: str | None = None
    """Why the request failed (connection refused, timeout), if it did."""
    text: str = ""
    """The response body."""

    @property
    def ok(self) -> bool:
        """Whether the request got a 2xx answer."""
        return self.status is not None and 200 <= self.status < 300


class WebhookSender:
    """Sends the emulated account's signed webhooks; records each in its ``callbacks``."""

    def __init__(
        self, account: TwilioEmulator, http: httpx.AsyncClient, nursery: trio.Nursery
    ) -> None:
        self._account = account
        self._http = http
        self._nursery = nursery

    async def send(
        self, kind: str, url: str, method: str, params: dict[str, str]
    ) -> WebhookAttempt:
        """Send one signed webhook; record it (also in the account's callbacks); never raise."""
        attempt = WebhookAttempt(kind, url, method, dict(params), trio.current_time())
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        auth_token = self._account.auth_token
        try:
            if method == "GET":
                full = url + ("&" if "?" in url else "?") + urlencode(params)
                headers[SIGNATURE_HEADER] = compute_signature(full, {}, auth_token)
                response = await self._http.get(full, headers=headers)
            else:
                headers[SIGNATURE_HEADER] = compute_signature(url, params, auth_token)
                response = await self._http.post(url, data=params, headers=headers)
            attempt.status = response.status_code
            attempt.text = response.text
        except httpx.HTTPError as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
        self._account.callbacks.append(attempt)
        if not attempt.ok:
            log.info(
                "%s webhook %s %s failed: %s", kind, method, url, attempt.error or attempt.status
            )
        return attempt

    def send_later(
        self, log_to: list[WebhookAttempt], template: WebhookAttempt, delay: float
    ) -> None:
        """In the background, after ``delay`` seconds, send ``template``; log it to ``log_to``."""
        self._nursery.start_soon(self._deliver_later, log_to, template, delay)

    def open_queue(self, log_to: list[WebhookAttempt]) -> trio.MemorySendChannel[WebhookAttempt]:
        """A queue whose webhooks go out one after another, in order, each logged to ``log_to``."""
        send, receive = trio.open_memory_channel[WebhookAttempt](math.inf)
        self._nursery.start_soon(self._deliver_in_order, log_to, receive)
        return send

    async def post_inbound(
        self, url: str, params: dict[str, str], log_to: list[WebhookAttempt]
    ) -> httpx.Response:
        """POST a signed inbound-message webhook and return the response.

        The attempt is recorded in ``log_to`` and the account's callbacks; an
        :class:`httpx.HTTPError` is recorded, then raised.
        """
        headers = {
            SIGNATURE_HEADER: compute_signature(url, params, self._account.auth_token),
            "User-Agent": "TwilioProxy/1.1",
        }
        attempt = WebhookAttempt("inbound-message", url, "POST", params, trio.current_time())
        try:
            response = await self._http.post(url, data=params, headers=headers)
        except httpx.HTTPError as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            log_to.append(attempt)
            self._account.callbacks.append(attempt)
        attempt.status = response.status_code
        attempt.text = response.text
        return response

    async def _deliver_in_order(
        self, log_to: list[WebhookAttempt], receive: trio.MemoryReceiveChannel[WebhookAttempt]
    ) -> None:
        async with receive:
            async for attempt in receive:
                log_to.append(await self._resend(attempt))

    async def _deliver_later(
        self, log_to: list[WebhookAttempt], attempt: WebhookAttempt, delay: float
    ) -> None:
        await trio.sleep(delay)
        log_to.append(await self._resend(attempt))

    async def _resend(self, template: WebhookAttempt) -> WebhookAttempt:
        return await self.send(template.kind, template.url, template.method, template.params)
