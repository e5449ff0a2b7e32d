"""The emulated Twilio account: its settings, scripting and records, and how to run one.

:func:`open_twilio_emulator` serves a :class:`TwilioEmulator` on loopback. The emulator holds
what a test reads and sets; the work is done by its parts: the HTTP server
(:mod:`~engine.testing.twilio_api.server`), the Calls and Messages endpoints
(:mod:`~engine.testing.twilio_api.calls`, :mod:`~engine.testing.twilio_api.messages`), the
call lifecycle (:mod:`~engine.testing.twilio_api.call_lifecycle`) and the signed webhooks
(:mod:`~engine.testing.twilio_api.webhooks`).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from os import PathLike
from pathlib import Path
from typing import Literal

import httpx
import trio

from engine.testing.stream import new_sid
from engine.testing.twilio_api.call_lifecycle import CallLifecycle
from engine.testing.twilio_api.calls import (
    CalleeBehaviour,
    CallsEndpoint,
    EmulatedCallState,
    Outcome,
)
from engine.testing.twilio_api.messages import (
    WHATSAPP_SESSION_S,
    EmulatedMessage,
    MessagesEndpoint,
    whatsapp_address,
)
from engine.testing.twilio_api.server import ApiServer, RecordedRequest
from engine.testing.twilio_api.spec import ApiSpec
from engine.testing.twilio_api.webhooks import CallbackOrder, WebhookAttempt, WebhookSender

__all__ = ["TwilioEmulator", "open_twilio_emulator"]


class TwilioEmulator:
    """The emulated Twilio account and REST API; made by :func:`open_twilio_emulator`.

    Settings are plain attributes, read at the moment they apply: :attr:`status_callbacks_enabled`,
    :attr:`callback_order`, :attr:`duplicate_callbacks`, :attr:`time_scale`,
    :attr:`whatsapp_window`, :attr:`default_callee`.
    """

    def __init__(
        self,
        spec: ApiSpec,
        *,
        account_sid: str,
        auth_token: str,
        http: httpx.AsyncClient,
        nursery: trio.Nursery,
    ) -> None:
        self.spec = spec
        """Twilio's OpenAPI description the requests are checked against."""
        self.account_sid = account_sid
        """The account (``AC…``): HTTP Basic username, and the ``{AccountSid}`` in every path."""
        self.auth_token = auth_token
        """The Auth Token: HTTP Basic password, and the key that signs every webhook."""
        self.api_key_sid = new_sid("SK")
        """An API key of the account: HTTP Basic username ``api_key_sid``, password below."""
        self.api_key_secret = secrets.token_hex(16)
        """The API key's secret."""
        self.base_url = ""
        """``http://127.0.0.1:PORT``: what a client uses as ``TWILIO_API_BASE_URL``."""
        self.calls: dict[str, EmulatedCallState] = {}
        """Every call created (and not deleted), by SID."""
        self.messages: dict[str, EmulatedMessage] = {}
        """Every message created or received (and not deleted), by SID."""
        self.requests: list[RecordedRequest] = []
        """Every request the REST API answered, in order."""
        self.callbacks: list[WebhookAttempt] = []
        """Every webhook the emulator sent (TwiML fetches, callbacks, inbound messages)."""
        self.applications: dict[str, str] = {}
        """TwiML apps: ``AP…`` SID → voice URL, for calls created with ``ApplicationSid``."""
        self.whatsapp_sessions: dict[str, float] = {}
        """Open WhatsApp sessions: ``whatsapp:+E164`` → when it closes (``trio.current_time()``)."""
        self.status_callbacks_enabled = True
        """Send status callbacks at all."""
        self.callback_order: CallbackOrder = "in-order"
        """``in-order``: one after another per call; ``shuffled``: each after a random delay,
        so they may arrive out of order (as Twilio warns they can)."""
        self.duplicate_callbacks = False
        """Send every status callback twice (same ``SequenceNumber``)."""
        self.time_scale = 1.0
        """Real seconds per emulated second, for ``Timeout``, ``TimeLimit`` and durations."""
        self.whatsapp_window: Literal["reject", "fail"] = "reject"
        """A free-form WhatsApp message outside the 24 h session: ``reject`` answers HTTP 400
        with code 63016; ``fail`` accepts it (201) and then fails it with error_code 63016."""
        self.default_callee = CalleeBehaviour()
        """How numbers not scripted with :meth:`callee` behave."""
        webhooks = WebhookSender(self, http, nursery)
        self._calls = CallsEndpoint(self, CallLifecycle(self, webhooks, nursery))
        self._messages = MessagesEndpoint(self, webhooks, nursery)
        self._server = ApiServer(self, self._calls, self._messages)

    def callee(self, number: str, behaviour: CalleeBehaviour | Outcome) -> None:
        """Script how ``number`` answers calls: a :class:`CalleeBehaviour` or just its outcome."""
        if isinstance(behaviour, str):
            behaviour = CalleeBehaviour(outcome=behaviour)
        self._calls.script_callee(number, behaviour)

    def inject(
        self,
        *,
        status: int,
        code: int | None = None,
        retry_after: float | None = None,
        times: int = 1,
        path_contains: str = "",
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose path contains ``path_contains`` with an error.

        The body is Twilio's error JSON with ``code`` (default per status: 429 → 20429,
        401 → 20003, 404 → 20404, 500 → 20500, 503 → 20503…); ``retry_after`` adds a
        ``Retry-After`` header (seconds, fractions allowed). Nothing else happens for them.
        """
        self._server.inject(
            status=status,
            code=code,
            retry_after=retry_after,
            times=times,
            path_contains=path_contains,
            message=message,
        )

    def delay_after_accept(self, seconds: float, times: int = 1, path_contains: str = "") -> None:
        """Handle the next ``times`` matching requests as usual, then wait before answering."""
        self._server.delay_after_accept(seconds, times, path_contains)

    def open_whatsapp_session(self, number: str) -> None:
        """Open the 24 h WhatsApp session with ``number`` (``whatsapp:`` prefix optional)."""
        self.whatsapp_sessions[whatsapp_address(number)] = trio.current_time() + WHATSAPP_SESSION_S

    def close_whatsapp_session(self, number: str) -> None:
        """Close the WhatsApp session with ``number``, as if 24 h had passed."""
        self.whatsapp_sessions.pop(whatsapp_address(number), None)

    async def post_whatsapp_message(
        self,
        server_url: str,
        *,
        body: str,
        from_number: str,
        to_number: str,
        profile_name: str = "Emulated User",
        media: Sequence[tuple[str, str]] = (),
        **extra: str,
    ) -> httpx.Response:
        """Deliver an inbound WhatsApp message to ``server_url`` as Twilio's signed webhook.

        ``from_number`` is the user, ``to_number`` your WhatsApp sender (``whatsapp:`` prefix
        optional). ``media`` holds (URL, content type) pairs; ``extra`` adds or overrides fields
        (e.g. ``ButtonPayload="yes"``). Opens the 24 h session with the user first, records the
        message in :attr:`messages` (direction ``inbound``) and returns the server's response.
        """
        return await self._messages.receive_whatsapp(
            server_url,
            body=body,
            from_number=from_number,
            to_number=to_number,
            profile_name=profile_name,
            media=media,
            extra=extra,
        )


@asynccontextmanager
async def open_twilio_emulator(
    *,
    spec_path: Path | PathLike[str] | str | None = None,
    account_sid: str | None = None,
    auth_token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[TwilioEmulator]:
    """Run the emulated Twilio REST API on ``host:port`` (0: a free port) until the block exits.

    ``spec_path`` is Twilio's OpenAPI document ``twilio_api_v2010.json`` (plain or gzipped);
    by default the copy that ships with the engine. The account SID and
    Auth Token are generated unless given. On exit every call, message and callback in flight is
    cancelled (a live media stream still gets its ``stop``).
    """
    spec = ApiSpec.load() if spec_path is None else ApiSpec.load(Path(spec_path))
    async with httpx.AsyncClient(timeout=10) as http, trio.open_nursery() as nursery:
        emulator = TwilioEmulator(
            spec,
            account_sid=account_sid or new_sid("AC"),
            auth_token=auth_token or secrets.token_hex(16),
            http=http,
            nursery=nursery,
        )
        emulator.base_url = await nursery.start(emulator._server.serve, host, port)
        try:
            yield emulator
        finally:
            nursery.cancel_scope.cancel()
