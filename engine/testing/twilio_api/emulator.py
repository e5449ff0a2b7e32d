"""The emulated Twilio REST API as one object, and how to run one.

:func:`open_twilio_emulator` serves a :class:`TwilioEmulator` on loopback. The emulator composes
the parts around one :class:`~engine.testing.twilio_api.account.Account` (the settings and
records they share): the signed webhooks (:mod:`~engine.testing.twilio_api.webhooks`), the call
lifecycle (:mod:`~engine.testing.twilio_api.call_lifecycle`), the Calls and Messages endpoints
(:mod:`~engine.testing.twilio_api.calls`, :mod:`~engine.testing.twilio_api.messages`) and the
HTTP server (:mod:`~engine.testing.twilio_api.server`). It adds no behaviour of its own: its
attributes are the account's, its methods script the parts.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import fields
from os import PathLike
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import httpx
import trio

from engine.testing.stream import new_sid
from engine.testing.twilio_api.account import Account, CallbackOrder, WhatsAppWindow
from engine.testing.twilio_api.call_lifecycle import CallLifecycle
from engine.testing.twilio_api.calls import CallsEndpoint
from engine.testing.twilio_api.messages import MessagesEndpoint
from engine.testing.twilio_api.records import (
    CalleeBehaviour,
    EmulatedCallState,
    EmulatedMessage,
    Outcome,
    RecordedRequest,
    WebhookAttempt,
)
from engine.testing.twilio_api.server import ApiServer
from engine.testing.twilio_api.spec import ApiSpec
from engine.testing.twilio_api.webhooks import WebhookSender

__all__ = ["TwilioEmulator", "open_twilio_emulator"]

_T = TypeVar("_T")
_ACCOUNT_FIELDS = frozenset(f.name for f in fields(Account))


class _OnAccount(Generic[_T]):
    """An attribute of :class:`TwilioEmulator` that is its account's: reading or setting it on
    the emulator reads or sets :attr:`TwilioEmulator.account`'s attribute of the same name."""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        if name not in _ACCOUNT_FIELDS:
            raise TypeError(f"Account has no attribute {name!r}")
        self._name = name

    @overload
    def __get__(self, emulator: None, owner: type[Any]) -> _OnAccount[_T]: ...

    @overload
    def __get__(self, emulator: TwilioEmulator, owner: type[Any]) -> _T: ...

    def __get__(self, emulator: TwilioEmulator | None, owner: type[Any]) -> _T | _OnAccount[_T]:
        if emulator is None:
            return self
        value: _T = getattr(emulator.account, self._name)
        return value

    def __set__(self, emulator: TwilioEmulator, value: _T) -> None:
        setattr(emulator.account, self._name, value)


class TwilioEmulator:
    """The emulated Twilio account and REST API; made by :func:`open_twilio_emulator`.

    The attributes below are :attr:`account`'s (see
    :class:`~engine.testing.twilio_api.account.Account` for each): its identity
    (``account_sid``, ``auth_token``, ``api_key_sid``, ``api_key_secret``, ``base_url``), its
    settings, read at the moment they apply (``status_callbacks_enabled``, ``callback_order``,
    ``duplicate_callbacks``, ``time_scale``, ``whatsapp_window``, ``default_callee``,
    ``applications``) and its records (``calls``, ``messages``, ``requests``, ``callbacks``,
    ``whatsapp_sessions``). Setting one on the emulator sets the account's.
    """

    account_sid = _OnAccount[str]()
    auth_token = _OnAccount[str]()
    api_key_sid = _OnAccount[str]()
    api_key_secret = _OnAccount[str]()
    base_url = _OnAccount[str]()

    status_callbacks_enabled = _OnAccount[bool]()
    callback_order = _OnAccount[CallbackOrder]()
    duplicate_callbacks = _OnAccount[bool]()
    time_scale = _OnAccount[float]()
    whatsapp_window = _OnAccount[WhatsAppWindow]()
    default_callee = _OnAccount[CalleeBehaviour]()
    applications = _OnAccount[dict[str, str]]()

    calls = _OnAccount[dict[str, EmulatedCallState]]()
    messages = _OnAccount[dict[str, EmulatedMessage]]()
    requests = _OnAccount[list[RecordedRequest]]()
    callbacks = _OnAccount[list[WebhookAttempt]]()
    whatsapp_sessions = _OnAccount[dict[str, float]]()

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
        self.account = Account(account_sid=account_sid, auth_token=auth_token)
        """The settings and records every part of the emulator shares."""
        webhooks = WebhookSender(self.account, http, nursery)
        lifecycle = CallLifecycle(self.account, webhooks, nursery)
        self._calls = CallsEndpoint(self.account, spec, lifecycle)
        self._messages = MessagesEndpoint(self.account, spec, webhooks, nursery)
        self._server = ApiServer(self.account, self._calls, self._messages)

    def callee(self, number: str, behaviour: CalleeBehaviour | Outcome) -> None:
        """Script how ``number`` answers calls: a :class:`CalleeBehaviour` or just its outcome."""
        if isinstance(behaviour, str):
            behaviour = CalleeBehaviour(outcome=behaviour)
        self.account.callees[number] = behaviour

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
        self.account.open_whatsapp_session(number)

    def close_whatsapp_session(self, number: str) -> None:
        """Close the WhatsApp session with ``number``, as if 24 h had passed."""
        self.account.close_whatsapp_session(number)

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
