"""Calls on the emulated API: how callees behave, each call's state, and the Calls endpoints.

:class:`CallsEndpoint` creates, updates and describes calls; each call then runs in the
emulator as :class:`~engine.testing.twilio_api.call_lifecycle.CallLifecycle` drives it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import trio

from engine.testing.stream import EmulatedStream, StreamRecord, new_sid
from engine.testing.twilio_api.resources import (
    ACCOUNTS_PREFIX,
    API_VERSION,
    CALL_PATH,
    CALLS_PATH,
    fill_resource,
    rfc2822,
)
from engine.testing.twilio_api.rules import MAX_TWIML_CHARS, check_create_call, format_number
from engine.testing.twilio_api.spec import ApiError, FormValues, first_value
from engine.testing.twilio_api.webhooks import WebhookAttempt

if TYPE_CHECKING:
    from engine.testing.twilio_api.call_lifecycle import CallLifecycle
    from engine.testing.twilio_api.emulator import TwilioEmulator

__all__ = [
    "FINAL_STATUSES",
    "CalleeBehaviour",
    "CallsEndpoint",
    "EmulatedCallState",
    "Outcome",
    "TwimlSource",
    "call_webhook_params",
]

Outcome = Literal["answer", "busy", "no-answer", "fail"]
"""How a dialled number answers: it picks up, is busy, never answers, or the call fails."""

FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
"""The statuses a call ends in."""

_DEFAULT_TIMEOUT_S = 60
_MAX_TIMEOUT_S = 600
_DEFAULT_TIME_LIMIT_S = 14400
_CALL_SUBRESOURCES = {
    "notifications": "Notifications",
    "recordings": "Recordings",
    "payments": "Payments",
    "events": "Events",
    "siprec": "Siprec",
    "streams": "Streams",
    "transcriptions": "Transcriptions",
    "user_defined_message_subscriptions": "UserDefinedMessageSubscriptions",
    "user_defined_messages": "UserDefinedMessages",
}


@dataclass(frozen=True, slots=True)
class CalleeBehaviour:
    """How the party at a dialled number behaves (see :meth:`TwilioEmulator.callee`).

    Seconds here are real seconds, not scaled by ``time_scale``.
    """

    outcome: Outcome = "answer"
    """``answer``; ``busy`` (486); ``no-answer`` (rings until ``Timeout``, 487); ``fail`` (404)."""
    ring_seconds: float = 0.05
    """How long the phone rings before the callee answers (or the line reports busy). A call
    whose ring lasts past its ``Timeout`` ends ``no-answer``."""
    say: bytes | None = None
    """μ-law audio the callee speaks once the stream runs, after ``say_after`` seconds."""
    say_after: float = 0.5
    hang_up_after: float | None = None
    """Seconds after answering at which the callee hangs up; ``None``: never."""
    sip_response_code: int | None = None
    """The ``SipResponseCode`` of a ``fail`` outcome (default 404; 500 for a server failure)."""


@dataclass(frozen=True, slots=True)
class TwimlSource:
    """Where a call gets its TwiML: inline, or a URL fetched with a method."""

    twiml: str | None = None
    url: str | None = None
    method: str = "POST"
    fallback_url: str | None = None
    fallback_method: str = "POST"


@dataclass(eq=False)
class EmulatedCallState:
    """One call created through the emulated API: its settings, progress and what happened.

    The fields starting with ``_`` are the emulator's handles on the running call.
    """

    sid: str
    account_sid: str
    to: str
    from_: str
    form: list[tuple[str, str]]
    """The create request's form fields as received, in order."""
    params: FormValues
    """The create request's fields as a multi-dict."""
    behaviour: CalleeBehaviour
    timeout: int
    """Ring timeout, in (emulated) seconds."""
    time_limit: int
    """Longest call, in (emulated) seconds from answering."""
    status_callback: str | None
    status_callback_method: str
    status_callback_events: frozenset[str]
    status: str = "queued"
    """The REST ``status`` (``initiated`` never shows here; see :attr:`progress`)."""
    progress: list[str] = field(default_factory=list)
    """Every status the call went through, ``initiated`` included, in order."""
    date_created: float = field(default_factory=time.time)
    date_updated: float = field(default_factory=time.time)
    start_time: float | None = None
    end_time: float | None = None
    duration: int | None = None
    """Seconds from answer to hang-up (emulated), once the call has ended."""
    queue_time_ms: int = 0
    price: str | None = None
    answered_by: str | None = None
    sip_response_code: int | None = None
    end_reason: str | None = None
    """Why the call ended: ``stream-closed`` (the server closed the stream), ``callee-hung-up``,
    ``time-limit``, ``api-completed``, ``api-canceled``, ``twiml-ended`` (nothing to stream),
    ``twiml-failed``, ``stream-failed``, ``busy``, ``no-answer`` or ``failed``."""
    twiml: list[str] = field(default_factory=list)
    """Every TwiML document the call followed."""
    twiml_requests: list[WebhookAttempt] = field(default_factory=list)
    callbacks: list[WebhookAttempt] = field(default_factory=list)
    """Status callbacks, in the order their requests completed."""
    records: list[StreamRecord] = field(default_factory=list)
    """One record per media stream the call ran (several after redirects)."""
    stream: EmulatedStream | None = None
    """The live media stream, while one runs."""
    updates: list[list[tuple[str, str]]] = field(default_factory=list)
    """The form fields of every update request, in order."""
    errors: list[str] = field(default_factory=list)
    """What went wrong on Twilio's side (failed TwiML fetches, bad TwiML, stream handshakes)."""
    ended: trio.Event = field(default_factory=trio.Event)
    """Set once the call has reached its final status."""
    _source: TwimlSource = field(default_factory=TwimlSource, repr=False)
    _redirect: TwimlSource | None = field(default=None, repr=False)
    _final: str | None = field(default=None, repr=False)
    _scope: trio.CancelScope | None = field(default=None, repr=False)
    _twiml_scope: trio.CancelScope | None = field(default=None, repr=False)
    _limit_scope: trio.CancelScope | None = field(default=None, repr=False)
    _answered_at: float | None = field(default=None, repr=False)
    _initiated: bool = field(default=False, repr=False)
    _sequence: int = field(default=0, repr=False)
    _outbox: trio.MemorySendChannel[WebhookAttempt] | None = field(default=None, repr=False)

    @property
    def record(self) -> StreamRecord | None:
        """The last media stream's record (what the callee heard and said), if any."""
        return self.records[-1] if self.records else None

    def param(self, name: str) -> str | None:
        """The first value of create-request field ``name``, if given."""
        values = self.params.get(name)
        return values[0] if values else None


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


def _twiml_source(values: FormValues, twiml: str | None, url: str | None) -> TwimlSource:
    """The TwiML a create or update request points the call at."""
    return TwimlSource(
        twiml=twiml,
        url=url,
        method=(first_value(values, "Method") or "POST").upper(),
        fallback_url=first_value(values, "FallbackUrl"),
        fallback_method=(first_value(values, "FallbackMethod") or "POST").upper(),
    )


class CallsEndpoint:
    """The emulated account's Calls: create, update, and each call as its REST resource."""

    def __init__(self, account: TwilioEmulator, lifecycle: CallLifecycle) -> None:
        self._account = account
        self._lifecycle = lifecycle
        self._callees: dict[str, CalleeBehaviour] = {}
        self._properties = account.spec.resource_properties("api.v2010.account.call")

    def script_callee(self, number: str, behaviour: CalleeBehaviour) -> None:
        """Make ``number`` answer the calls created from now on as ``behaviour`` says."""
        self._callees[number] = behaviour

    def create(self, form: list[tuple[str, str]]) -> dict[str, Any]:
        """``CreateCall``: check ``form``, start the call, and return its resource.

        Raises :class:`~engine.testing.twilio_api.spec.ApiError` for a request Twilio refuses.
        """
        account = self._account
        values = account.spec.validate_form(account.spec.operation("POST", CALLS_PATH), form)
        check_create_call(values)

        def first(name: str) -> str | None:
            return first_value(values, name)

        url = first("Url")
        twiml = None if url else first("Twiml")
        application = first("ApplicationSid")
        if not url and twiml is None and application:
            url = account.applications.get(application)
            if url is None:
                raise ApiError(400, 21205, f"Application {application} has no valid VoiceUrl")
        to, from_ = values["To"][0], values["From"][0]
        timeout = int(first("Timeout") or _DEFAULT_TIMEOUT_S)
        events = values.get("StatusCallbackEvent") or ["completed"]
        call = EmulatedCallState(
            sid=new_sid("CA"),
            account_sid=account.account_sid,
            to=to,
            from_=from_,
            form=list(form),
            params=values,
            behaviour=self._callees.get(to, account.default_callee),
            timeout=max(1, min(_MAX_TIMEOUT_S, timeout)),
            time_limit=max(1, int(first("TimeLimit") or _DEFAULT_TIME_LIMIT_S)),
            status_callback=first("StatusCallback"),
            status_callback_method=(first("StatusCallbackMethod") or "POST").upper(),
            status_callback_events=frozenset(events),
        )
        call._source = _twiml_source(values, twiml, url)
        account.calls[call.sid] = call
        self._lifecycle.start(call)
        return self.resource(call)

    async def update(self, call: EmulatedCallState, form: list[tuple[str, str]]) -> dict[str, Any]:
        """``UpdateCall``: hang up, cancel or redirect ``call``; return its resource.

        Ending a call waits (up to 2 s) until it has ended. Raises
        :class:`~engine.testing.twilio_api.spec.ApiError` for a request Twilio refuses.
        """
        account = self._account
        values = account.spec.validate_form(account.spec.operation("POST", CALL_PATH), form)

        def first(name: str) -> str | None:
            return first_value(values, name)

        status, url, twiml = first("Status"), first("Url"), first("Twiml")
        if url and twiml is not None:
            raise ApiError(400, 20001, "Url and Twiml are mutually exclusive on update")
        if twiml is not None and len(twiml) > MAX_TWIML_CHARS:
            raise ApiError(400, 20001, "Twiml is longer than 4000 characters")
        if (url or twiml is not None) and not status and call.status in FINAL_STATUSES:
            raise ApiError(400, 21220, "Call is not in-progress. Cannot redirect.")
        call.updates.append(list(form))
        call.date_updated = time.time()
        if first("StatusCallback"):
            call.status_callback = first("StatusCallback")
        if first("StatusCallbackMethod"):
            call.status_callback_method = (first("StatusCallbackMethod") or "POST").upper()
        if first("TimeLimit"):
            call.time_limit = max(1, int(first("TimeLimit") or 1))
            self._lifecycle.apply_time_limit(call)
        if status and call.status not in FINAL_STATUSES:
            live = call.status == "in-progress"
            if status == "completed" or not live:  # canceled has no effect once answered
                final = "completed" if live else "canceled"
                self._lifecycle.request_end(call, final, f"api-{status}")
                with trio.move_on_after(2):
                    await call.ended.wait()
        elif url or twiml is not None:
            self._lifecycle.redirect(call, _twiml_source(values, twiml, url))
        return self.resource(call)

    def resource(self, call: EmulatedCallState) -> dict[str, Any]:
        """``call`` as the API serves it: every property of ``api.v2010.account.call``."""
        uri = f"{ACCOUNTS_PREFIX}{call.account_sid}/Calls/{call.sid}"
        from_is_number = call.from_.startswith("+")
        return fill_resource(
            self._properties,
            {
                "sid": call.sid,
                "date_created": rfc2822(call.date_created),
                "date_updated": rfc2822(call.date_updated),
                "account_sid": call.account_sid,
                "to": call.to,
                "to_formatted": format_number(call.to),
                "from": call.from_,
                "from_formatted": format_number(call.from_),
                "phone_number_sid": (
                    "PN" + hashlib.md5(call.from_.encode()).hexdigest() if from_is_number else None
                ),
                "status": call.status,
                "start_time": rfc2822(call.start_time),
                "end_time": rfc2822(call.end_time),
                "duration": None if call.duration is None else str(call.duration),
                "price": call.price,
                "price_unit": "USD",
                "direction": "outbound-api",
                "answered_by": call.answered_by,
                "api_version": API_VERSION,
                "queue_time": str(call.queue_time_ms),
                "uri": uri + ".json",
                "subresource_uris": {
                    key: f"{uri}/{name}.json" for key, name in _CALL_SUBRESOURCES.items()
                },
            },
        )
