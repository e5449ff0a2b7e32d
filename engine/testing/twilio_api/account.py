"""The emulated Twilio account: who it is, how it is set to behave, and what happened on it.

One :class:`Account` is shared by every part of the emulator — the HTTP server
(:mod:`~engine.testing.twilio_api.server`), the Calls and Messages endpoints
(:mod:`~engine.testing.twilio_api.calls`, :mod:`~engine.testing.twilio_api.messages`), the call
lifecycle (:mod:`~engine.testing.twilio_api.call_lifecycle`) and the signed webhooks
(:mod:`~engine.testing.twilio_api.webhooks`). They read its settings at the moment they apply and
add to its records (:mod:`~engine.testing.twilio_api.records`); it depends on none of them.
:class:`~engine.testing.twilio_api.emulator.TwilioEmulator` composes the parts around it.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Literal

import trio

from engine.testing.stream import new_sid
from engine.testing.twilio_api.records import (
    CalleeBehaviour,
    EmulatedCallState,
    EmulatedMessage,
    RecordedRequest,
    WebhookAttempt,
)

__all__ = ["WHATSAPP_SESSION_S", "Account", "CallbackOrder", "WhatsAppWindow", "whatsapp_address"]

CallbackOrder = Literal["in-order", "shuffled"]
"""How status callbacks go out: one after another per call, or each after a random delay."""

WhatsAppWindow = Literal["reject", "fail"]
"""What a free-form WhatsApp message outside the 24 h session meets (see
:attr:`Account.whatsapp_window`)."""

WHATSAPP_SESSION_S = 24 * 3600.0
"""How long a WhatsApp session stays open after the user's last message, in seconds."""


def whatsapp_address(number: str) -> str:
    """``number`` with the ``whatsapp:`` prefix (added when missing)."""
    return number if number.startswith("whatsapp:") else f"whatsapp:{number}"


@dataclass(eq=False)
class Account:
    """The emulated account's identity, settings and records.

    Settings are plain attributes, read at the moment they apply: :attr:`status_callbacks_enabled`,
    :attr:`callback_order`, :attr:`duplicate_callbacks`, :attr:`time_scale`,
    :attr:`whatsapp_window`, :attr:`default_callee` and :attr:`callees`.
    """

    account_sid: str
    """The account (``AC…``): HTTP Basic username, and the ``{AccountSid}`` in every path."""
    auth_token: str
    """The Auth Token: HTTP Basic password, and the key that signs every webhook."""
    api_key_sid: str = field(default_factory=lambda: new_sid("SK"))
    """An API key of the account: HTTP Basic username ``api_key_sid``, password below."""
    api_key_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    """The API key's secret."""
    base_url: str = ""
    """``http://127.0.0.1:PORT``: what a client uses as ``TWILIO_API_BASE_URL``."""

    status_callbacks_enabled: bool = True
    """Send status callbacks at all."""
    callback_order: CallbackOrder = "in-order"
    """``in-order``: one after another per call; ``shuffled``: each after a random delay,
    so they may arrive out of order (as Twilio warns they can)."""
    duplicate_callbacks: bool = False
    """Send every status callback twice (same ``SequenceNumber``)."""
    time_scale: float = 1.0
    """Real seconds per emulated second, for ``Timeout``, ``TimeLimit`` and durations."""
    whatsapp_window: WhatsAppWindow = "reject"
    """A free-form WhatsApp message outside the 24 h session: ``reject`` answers HTTP 400
    with code 63016; ``fail`` accepts it (201) and then fails it with error_code 63016."""
    default_callee: CalleeBehaviour = field(default_factory=CalleeBehaviour)
    """How numbers not in :attr:`callees` behave."""
    callees: dict[str, CalleeBehaviour] = field(default_factory=dict)
    """How each scripted number answers the calls created from then on."""
    applications: dict[str, str] = field(default_factory=dict)
    """TwiML apps: ``AP…`` SID → voice URL, for calls created with ``ApplicationSid``."""

    calls: dict[str, EmulatedCallState] = field(default_factory=dict)
    """Every call created (and not deleted), by SID."""
    messages: dict[str, EmulatedMessage] = field(default_factory=dict)
    """Every message created or received (and not deleted), by SID."""
    requests: list[RecordedRequest] = field(default_factory=list)
    """Every request the REST API answered, in order."""
    callbacks: list[WebhookAttempt] = field(default_factory=list)
    """Every webhook the emulator sent (TwiML fetches, callbacks, inbound messages)."""
    whatsapp_sessions: dict[str, float] = field(default_factory=dict)
    """Open WhatsApp sessions: ``whatsapp:+E164`` → when it closes (``trio.current_time()``)."""

    def callee(self, number: str) -> CalleeBehaviour:
        """How ``number`` answers a call created now."""
        return self.callees.get(number, self.default_callee)

    def open_whatsapp_session(self, number: str) -> None:
        """Open the 24 h WhatsApp session with ``number`` (``whatsapp:`` prefix optional)."""
        self.whatsapp_sessions[whatsapp_address(number)] = trio.current_time() + WHATSAPP_SESSION_S

    def close_whatsapp_session(self, number: str) -> None:
        """Close the WhatsApp session with ``number``, as if 24 h had passed."""
        self.whatsapp_sessions.pop(whatsapp_address(number), None)

    def whatsapp_session_open(self, address: str) -> bool:
        """Whether the WhatsApp session with ``address`` (``whatsapp:+E164``) is open now."""
        return self.whatsapp_sessions.get(address, -math.inf) > trio.current_time()
