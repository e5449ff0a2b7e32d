"""Twilio's signed webhooks, as the emulator sends them.

:class:`WebhookSender` signs each request with the account's Auth Token (``X-Twilio-Signature``)
and sends it: TwiML fetches at once; status callbacks as the account's callback settings say
(in order, shuffled, duplicated); inbound messages as a plain POST. Every attempt is recorded as a
:class:`~engine.testing.twilio_api.records.WebhookAttempt`, in the account's ``callbacks`` and in
the list of the call or message it is about.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
from collections.abc import Callable
from urllib.parse import urlencode

import httpx
import trio

from engine.control.signature import SIGNATURE_HEADER, compute_signature
from engine.testing.twilio_api.account import Account
from engine.testing.twilio_api.records import WebhookAttempt

__all__ = ["SHUFFLE_MAX_S", "WebhookSender"]

log = logging.getLogger(__name__)

SHUFFLE_MAX_S = 0.08
"""Shuffled callbacks each wait a random delay up to this long."""


class WebhookSender:
    """Sends the emulated account's signed webhooks; records each in its ``callbacks``."""

    def __init__(self, account: Account, http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
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

    def send_status(
        self,
        log_to: list[WebhookAttempt],
        template: WebhookAttempt,
        in_order: Callable[[], trio.MemorySendChannel[WebhookAttempt]] | None = None,
    ) -> None:
        """Send status callback ``template`` in the background, as the account's settings say.

        Twice if :attr:`~Account.duplicate_callbacks`; with ``shuffled``
        :attr:`~Account.callback_order`, each copy after a random delay (up to
        :data:`SHUFFLE_MAX_S`); otherwise into the queue ``in_order`` gives (see
        :meth:`open_queue`), or at once without one. Each attempt is logged to ``log_to``.
        """
        copies = 2 if self._account.duplicate_callbacks else 1
        shuffled = self._account.callback_order == "shuffled"
        if in_order is not None and not shuffled:
            queue = in_order()
            for _ in range(copies):
                queue.send_nowait(template)
            return
        for _ in range(copies):
            delay = random.uniform(0, SHUFFLE_MAX_S) if shuffled else 0.0
            self.send_later(log_to, template, delay)

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
