"""An emulated Twilio REST API: a real HTTP server on loopback for your tests.

:func:`open_twilio_emulator` serves the parts of Twilio's 2010-04-01 API that the engine uses —
create, fetch, update, list and delete Calls and Messages — the way Twilio answers them:

- HTTP Basic auth with the account SID and Auth Token, or an API key (``SK…`` + secret);
  otherwise 401 with Twilio's error JSON (code 20003). Another account's path answers 404 (20404).
- Request bodies are checked against Twilio's own OpenAPI document (loaded from ``spec_path``,
  see :mod:`engine.testing.rest_spec`) and Twilio's semantic rules; failures answer Twilio's
  error JSON ``{"code", "message", "more_info", "status"}``.
- Resources carry every property of the spec's ``api.v2010.account.call`` /
  ``api.v2010.account.message`` schemas, with Twilio's types and RFC 2822 dates.
- Each call runs as a task in the emulator: queued → initiated → ringing → answered (or busy,
  no-answer, failed, as the callee is scripted with :meth:`TwilioEmulator.callee`). On answer it
  fetches TwiML (inline, or a signed voice webhook to ``Url``), dials the ``<Connect><Stream>``
  with :func:`~engine.testing.stream.open_stream`, and plays the callee's part (speak, hang up).
  Signed status callbacks report the progress. Messages go queued → sending → sent → delivered.
- Fault injection (:meth:`~TwilioEmulator.inject`, :meth:`~TwilioEmulator.delay_after_accept`)
  and callback settings (disabled, shuffled, duplicated) let tests exercise a client's resilience.

Timing: Twilio's seconds (``Timeout``, ``TimeLimit``, and the durations reported) run on an
emulated clock, ``time_scale`` real seconds per emulated second (default 1.0). Callee scripts and
audio are in real seconds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import partial
from os import PathLike
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import trio
import trio_websocket
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from engine.control.signature import SIGNATURE_HEADER, compute_signature
from engine.control.twiml import ConnectStream, parse_connect_stream
from engine.testing.rest_spec import (
    ApiError,
    ApiSpec,
    FormValues,
    check_create_call,
    check_create_message,
    count_segments,
    format_number,
)
from engine.testing.stream import EmulatedStream, StreamRecord, new_sid, open_stream

__all__ = [
    "API_VERSION",
    "CalleeBehaviour",
    "EmulatedCallState",
    "EmulatedMessage",
    "RecordedRequest",
    "TwilioEmulator",
    "WebhookAttempt",
    "open_twilio_emulator",
]

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
"""The REST API version the emulator serves."""

Outcome = Literal["answer", "busy", "no-answer", "fail"]
CallbackOrder = Literal["in-order", "shuffled"]

_PREFIX = f"/{API_VERSION}/Accounts/"
_CALLS = _PREFIX + "{AccountSid}/Calls.json"
_CALL = _PREFIX + "{AccountSid}/Calls/{Sid}.json"
_MESSAGES = _PREFIX + "{AccountSid}/Messages.json"
_MESSAGE = _PREFIX + "{AccountSid}/Messages/{Sid}.json"
_ROUTE = re.compile(r"^/2010-04-01/Accounts/([^/]+)/(Calls|Messages)(?:/([^/]+))?\.json$")
_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
_MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")

_STEP_S = 0.01
"""Real seconds between a call's queued, initiated and ringing steps."""
_MESSAGE_STEP_S = 0.03
"""Real seconds between a message's queued, sending, sent and delivered steps."""
_SHUFFLE_MAX_S = 0.08
"""Shuffled callbacks each wait a random delay up to this long."""
_FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
_DEFAULT_TIMEOUT_S = 60
_MAX_TIMEOUT_S = 600
_DEFAULT_TIME_LIMIT_S = 14400
_CALL_PRICE_PER_MINUTE = 0.014
_SMS_PRICE_PER_SEGMENT = 0.0075
_WHATSAPP_PRICE = 0.005
_SESSION_S = 24 * 3600.0
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
_DEFAULT_ERRORS = {
    400: (20001, "Bad Request"),
    401: (20003, "Authenticate"),
    403: (20403, "Forbidden"),
    404: (20404, "The requested resource was not found"),
    405: (20004, "Method not allowed"),
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    503: (20503, "Service Unavailable"),
}


def _rfc2822(epoch: float | None) -> str | None:
    """``epoch`` as Twilio writes dates: ``Thu, 24 Aug 2023 05:01:45 +0000``."""
    if epoch is None:
        return None
    return format_datetime(datetime.fromtimestamp(int(epoch), UTC))


def _whatsapp(number: str) -> str:
    """``number`` with the ``whatsapp:`` prefix (added when missing)."""
    return number if number.startswith("whatsapp:") else f"whatsapp:{number}"


def _fill(template: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Every property of a spec schema, null unless ``values`` sets it (which must be in it)."""
    unknown = set(values) - set(template)
    if unknown:
        raise RuntimeError(f"not properties of the spec schema: {sorted(unknown)}")
    resource = dict.fromkeys(template)
    resource.update(values)
    return resource


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


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the emulated REST API received, and the status it answered."""

    method: str
    path: str
    query: str
    form: list[tuple[str, str]]
    """The form body as (name, value) pairs, in the order received."""
    status: int
    username: str | None
    """The HTTP Basic username, if any."""


@dataclass(frozen=True, slots=True)
class _TwimlSource:
    """Where a call gets its TwiML: inline, or a URL fetched with a method."""

    twiml: str | None = None
    url: str | None = None
    method: str = "POST"
    fallback_url: str | None = None
    fallback_method: str = "POST"


@dataclass(eq=False)
class EmulatedCallState:
    """One call created through the emulated API: its settings, progress and what happened."""

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
    _source: _TwimlSource = field(default_factory=_TwimlSource, repr=False)
    _redirect: _TwimlSource | None = field(default=None, repr=False)
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


class EmulatedMessage(Mapping[str, Any]):
    """One message: reads as its resource (``message["status"]``), plus what was received."""

    def __init__(self, resource: dict[str, Any], form: list[tuple[str, str]]) -> None:
        self.resource = resource
        """The message resource as the API serves it (snake_case, every schema property)."""
        self.form = form
        """The create request's form fields (or the inbound webhook's), as received."""
        self.params: FormValues = {}
        """:attr:`form` as a multi-dict."""
        for name, value in form:
            self.params.setdefault(name, []).append(value)
        self.progress: list[str] = [resource["status"]]
        """Every status the message went through, in order."""
        self.callbacks: list[WebhookAttempt] = []
        """Status callbacks sent for it (or the inbound webhook, for an inbound message)."""
        self.settled = trio.Event()
        """Set when the message reaches a final status (delivered, received, failed…)."""

    @property
    def sid(self) -> str:
        """The message SID (SM… or MM…)."""
        return str(self.resource["sid"])

    @property
    def status(self) -> str:
        """The message's current status."""
        return str(self.resource["status"])

    def __getitem__(self, key: str) -> Any:
        return self.resource[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.resource)

    def __len__(self) -> int:
        return len(self.resource)

    def __repr__(self) -> str:
        return f"EmulatedMessage({self.resource!r})"


@dataclass
class _Fault:
    status: int
    code: int
    message: str
    retry_after: float | None
    remaining: int
    path_contains: str


@dataclass
class _Delay:
    seconds: float
    remaining: int
    path_contains: str


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: Any
    headers: tuple[tuple[str, str], ...] = ()


def _error_reply(error: ApiError, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(error.status, error.body(), headers)


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
        self._callees: dict[str, CalleeBehaviour] = {}
        self._faults: list[_Fault] = []
        self._delays: list[_Delay] = []
        self._http = http
        self._nursery = nursery
        self._call_props = spec.resource_properties("api.v2010.account.call")
        self._message_props = spec.resource_properties("api.v2010.account.message")

    # -- scripting ------------------------------------------------------------------------------

    def callee(self, number: str, behaviour: CalleeBehaviour | Outcome) -> None:
        """Script how ``number`` answers calls: a :class:`CalleeBehaviour` or just its outcome."""
        if isinstance(behaviour, str):
            behaviour = CalleeBehaviour(outcome=behaviour)
        self._callees[number] = behaviour

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
        default_code, default_message = _DEFAULT_ERRORS.get(status, (status, "Error"))
        self._faults.append(
            _Fault(
                status=status,
                code=default_code if code is None else code,
                message=message or default_message,
                retry_after=retry_after,
                remaining=times,
                path_contains=path_contains,
            )
        )

    def delay_after_accept(self, seconds: float, times: int = 1, path_contains: str = "") -> None:
        """Handle the next ``times`` matching requests as usual, then wait before answering."""
        self._delays.append(_Delay(seconds, times, path_contains))

    def open_whatsapp_session(self, number: str) -> None:
        """Open the 24 h WhatsApp session with ``number`` (``whatsapp:`` prefix optional)."""
        self.whatsapp_sessions[_whatsapp(number)] = trio.current_time() + _SESSION_S

    def close_whatsapp_session(self, number: str) -> None:
        """Close the WhatsApp session with ``number``, as if 24 h had passed."""
        self.whatsapp_sessions.pop(_whatsapp(number), None)

    def _session_open(self, address: str) -> bool:
        return self.whatsapp_sessions.get(address, -math.inf) > trio.current_time()

    # -- HTTP -----------------------------------------------------------------------------------

    async def _asgi(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            event = await receive()
            if event["type"] != "http.request":
                return
            chunks.append(event["body"])
            if not event["more_body"]:
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope["query_string"].decode("latin-1")
        body = b"".join(chunks).decode("utf-8", errors="replace")
        form = parse_qsl(body, keep_blank_values=True) if scope["method"] == "POST" else []
        username = self._username(headers.get("authorization"))
        try:
            reply = await self._handle(scope["method"], scope["path"], query, form, headers)
        except ApiError as exc:
            reply = _error_reply(exc)
        except Exception:
            log.exception("emulated Twilio API failed on %s %s", scope["method"], scope["path"])
            reply = _error_reply(ApiError(500, 20500, "Internal Server Error"))
        self.requests.append(
            RecordedRequest(scope["method"], scope["path"], query, form, reply.status, username)
        )
        for delay in self._delays:
            if delay.remaining > 0 and delay.path_contains in scope["path"]:
                delay.remaining -= 1
                await trio.sleep(delay.seconds)
                break
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        response_headers = [
            (b"twilio-request-id", new_sid("RQ").encode()),
            *((k.encode(), v.encode()) for k, v in reply.headers),
        ]
        if reply.body is not None:
            response_headers.append((b"content-type", b"application/json; charset=utf-8"))
        try:
            await send(
                {"type": "http.response.start", "status": reply.status, "headers": response_headers}
            )
            await send({"type": "http.response.body", "body": payload, "more_body": False})
        except Exception:  # the client gave up (a timeout test): nothing to answer
            log.debug("client left before the answer", exc_info=True)

    @staticmethod
    def _username(authorization: str | None) -> str | None:
        credentials = TwilioEmulator._credentials(authorization)
        return credentials[0] if credentials else None

    @staticmethod
    def _credentials(authorization: str | None) -> tuple[str, str] | None:
        if not authorization or not authorization.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, colon, password = decoded.partition(":")
        return (username, password) if colon else None

    def _authenticated(self, authorization: str | None) -> bool:
        credentials = self._credentials(authorization)
        if credentials is None:
            return False
        username, password = credentials
        pairs = ((self.account_sid, self.auth_token), (self.api_key_sid, self.api_key_secret))
        return any(
            hmac.compare_digest(username.encode(), user.encode())
            and hmac.compare_digest(password.encode(), secret.encode())
            for user, secret in pairs
        )

    async def _handle(
        self,
        method: str,
        path: str,
        query: str,
        form: list[tuple[str, str]],
        headers: Mapping[str, str],
    ) -> _Reply:
        for fault in self._faults:
            if fault.remaining > 0 and fault.path_contains in path:
                fault.remaining -= 1
                extra: tuple[tuple[str, str], ...] = ()
                if fault.retry_after is not None:
                    extra = (("Retry-After", f"{fault.retry_after:g}"),)
                return _error_reply(ApiError(fault.status, fault.code, fault.message), extra)
        if not self._authenticated(headers.get("authorization")):
            challenge = (("WWW-Authenticate", 'Basic realm="Twilio API"'),)
            return _error_reply(ApiError(401, 20003, "Authenticate"), challenge)
        not_found = ApiError(404, 20404, f"The requested resource {path} was not found")
        match = _ROUTE.match(path)
        if match is None or match.group(1) != self.account_sid:
            raise not_found
        kind, sid = match.group(2), match.group(3)
        allowed = ("GET", "POST", "DELETE") if sid else ("GET", "POST")
        if method not in allowed:
            raise ApiError(405, 20004, "Method not allowed")
        if kind == "Calls":
            if sid is None:
                return self._create_call(form) if method == "POST" else self._list("calls", query)
            call = self.calls.get(sid) if _CALL_SID.match(sid) else None
            if call is None:
                raise not_found
            if method == "GET":
                return _Reply(200, self._call_resource(call))
            if method == "DELETE":
                del self.calls[sid]
                return _Reply(204, None)
            return await self._update_call(call, form)
        if sid is None:
            return self._create_message(form) if method == "POST" else self._list("messages", query)
        message = self.messages.get(sid) if _MESSAGE_SID.match(sid) else None
        if message is None:
            raise not_found
        if method == "GET":
            return _Reply(200, dict(message.resource))
        if method == "DELETE":
            del self.messages[sid]
            return _Reply(204, None)
        return self._update_message(message, form)

    def _list(self, kind: Literal["calls", "messages"], query: str) -> _Reply:
        filters = dict(parse_qsl(query))
        items: list[dict[str, Any]] = (
            [self._call_resource(call) for call in self.calls.values()]
            if kind == "calls"
            else [dict(message.resource) for message in self.messages.values()]
        )
        items.reverse()  # newest first, as Twilio lists
        for name, key in (("To", "to"), ("From", "from"), ("Status", "status")):
            if name in filters:
                items = [item for item in items if item[key] == filters[name]]
        try:
            page_size = max(1, min(1000, int(filters.get("PageSize", "50"))))
        except ValueError:
            raise ApiError(400, 20001, "PageSize must be an integer") from None
        page = items[:page_size]
        uri = f"{_PREFIX}{self.account_sid}/{kind.capitalize()}.json?PageSize={page_size}&Page=0"
        return _Reply(
            200,
            {
                kind: page,
                "end": max(0, len(page) - 1),
                "first_page_uri": uri,
                "next_page_uri": None,
                "page": 0,
                "page_size": page_size,
                "previous_page_uri": None,
                "start": 0,
                "uri": uri,
            },
        )

    # -- calls ----------------------------------------------------------------------------------

    def _create_call(self, form: list[tuple[str, str]]) -> _Reply:
        values = self.spec.validate_form(self.spec.operation("POST", _CALLS), form)
        check_create_call(values)

        def first(name: str) -> str | None:
            given = values.get(name)
            return given[0] if given else None

        url = first("Url")
        twiml = None if url else first("Twiml")
        application = first("ApplicationSid")
        if not url and twiml is None and application:
            url = self.applications.get(application)
            if url is None:
                raise ApiError(400, 21205, f"Application {application} has no valid VoiceUrl")
        to, from_ = values["To"][0], values["From"][0]
        timeout = int(first("Timeout") or _DEFAULT_TIMEOUT_S)
        events = values.get("StatusCallbackEvent") or ["completed"]
        call = EmulatedCallState(
            sid=new_sid("CA"),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            form=list(form),
            params=values,
            behaviour=self._callees.get(to, self.default_callee),
            timeout=max(1, min(_MAX_TIMEOUT_S, timeout)),
            time_limit=max(1, int(first("TimeLimit") or _DEFAULT_TIME_LIMIT_S)),
            status_callback=first("StatusCallback"),
            status_callback_method=(first("StatusCallbackMethod") or "POST").upper(),
            status_callback_events=frozenset(events),
        )
        call._source = _TwimlSource(
            twiml=twiml,
            url=url,
            method=(first("Method") or "POST").upper(),
            fallback_url=first("FallbackUrl"),
            fallback_method=(first("FallbackMethod") or "POST").upper(),
        )
        self.calls[call.sid] = call
        self._nursery.start_soon(self._run_call, call, name=f"emulated call {call.sid}")
        return _Reply(201, self._call_resource(call))

    async def _update_call(self, call: EmulatedCallState, form: list[tuple[str, str]]) -> _Reply:
        values = self.spec.validate_form(self.spec.operation("POST", _CALL), form)

        def first(name: str) -> str | None:
            given = values.get(name)
            return given[0] if given else None

        status, url, twiml = first("Status"), first("Url"), first("Twiml")
        if url and twiml is not None:
            raise ApiError(400, 20001, "Url and Twiml are mutually exclusive on update")
        if twiml is not None and len(twiml) > 4000:
            raise ApiError(400, 20001, "Twiml is longer than 4000 characters")
        if (url or twiml is not None) and not status and call.status in _FINAL_STATUSES:
            raise ApiError(400, 21220, "Call is not in-progress. Cannot redirect.")
        call.updates.append(list(form))
        call.date_updated = time.time()
        if first("StatusCallback"):
            call.status_callback = first("StatusCallback")
        if first("StatusCallbackMethod"):
            call.status_callback_method = (first("StatusCallbackMethod") or "POST").upper()
        if first("TimeLimit"):
            call.time_limit = max(1, int(first("TimeLimit") or 1))
            if call._limit_scope is not None and call._answered_at is not None:
                call._limit_scope.deadline = call._answered_at + call.time_limit * self.time_scale
        if status and call.status not in _FINAL_STATUSES:
            live = call.status == "in-progress"
            if status == "completed" or not live:  # canceled has no effect once answered
                final = "completed" if live else "canceled"
                self._request_end(call, final, f"api-{status}")
                with trio.move_on_after(2):
                    await call.ended.wait()
        elif url or twiml is not None:
            source = _TwimlSource(
                twiml=twiml,
                url=url,
                method=(first("Method") or "POST").upper(),
                fallback_url=first("FallbackUrl"),
                fallback_method=(first("FallbackMethod") or "POST").upper(),
            )
            if call.status == "in-progress":
                call._redirect = source
                if call._twiml_scope is not None:
                    call._twiml_scope.cancel()
            else:
                call._source = source
        return _Reply(200, self._call_resource(call))

    def _request_end(self, call: EmulatedCallState, final: str, reason: str) -> None:
        if call._final is None:
            call._final = final
            call.end_reason = reason
        if call._scope is not None:
            call._scope.cancel()

    def _call_resource(self, call: EmulatedCallState) -> dict[str, Any]:
        uri = f"{_PREFIX}{call.account_sid}/Calls/{call.sid}"
        from_is_number = call.from_.startswith("+")
        return _fill(
            self._call_props,
            {
                "sid": call.sid,
                "date_created": _rfc2822(call.date_created),
                "date_updated": _rfc2822(call.date_updated),
                "account_sid": call.account_sid,
                "to": call.to,
                "to_formatted": format_number(call.to),
                "from": call.from_,
                "from_formatted": format_number(call.from_),
                "phone_number_sid": (
                    "PN" + hashlib.md5(call.from_.encode()).hexdigest() if from_is_number else None
                ),
                "status": call.status,
                "start_time": _rfc2822(call.start_time),
                "end_time": _rfc2822(call.end_time),
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

    def _call_params(self, call: EmulatedCallState, call_status: str) -> dict[str, str]:
        """The fields every voice webhook carries (PROTOCOL.md §3)."""
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
        ring_limit = call.timeout * self.time_scale
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
        deadline = call._answered_at + call.time_limit * self.time_scale
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
        self._status_event(call, "completed" if status in _FINAL_STATUSES else event, status)

    def _finish(self, call: EmulatedCallState, final: str, sip: int) -> None:
        call.end_time = time.time()
        call.sip_response_code = sip
        if call._answered_at is not None:
            elapsed = (trio.current_time() - call._answered_at) / self.time_scale
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
        source: _TwimlSource | None = call._source
        while source is not None:
            with trio.CancelScope() as scope:
                call._twiml_scope = scope
                await self._follow(call, source)
            call._twiml_scope = None
            source, call._redirect = call._redirect, None

    async def _follow(self, call: EmulatedCallState, source: _TwimlSource) -> None:
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

    async def _fetch_twiml(self, call: EmulatedCallState, source: _TwimlSource) -> str | None:
        if source.url is None:
            return source.twiml or ""
        targets = [(source.url, source.method)]
        if source.fallback_url:
            targets.append((source.fallback_url, source.fallback_method))
        params = self._call_params(call, "in-progress")
        for url, method in targets:
            attempt = await self._send_webhook("twiml", url, method, params)
            call.twiml_requests.append(attempt)
            if attempt.ok:
                return attempt.text
            why = attempt.error or f"HTTP {attempt.status}"
            call.errors.append(f"11200 HTTP retrieval failure: {method} {url}: {why}")
            params = {**params, "ErrorCode": "11200", "ErrorUrl": url}
        return None

    async def _stream(
        self, call: EmulatedCallState, connect: ConnectStream, source: _TwimlSource
    ) -> None:
        url = connect.url
        if source.url is not None and "://" not in url:
            parts = urlsplit(urljoin(source.url, url))
            scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
            url = urlunsplit((scheme, parts.netloc, parts.path, "", ""))
        try:
            async with open_stream(
                url,
                auth_token=self.auth_token,
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

    # -- status callbacks -----------------------------------------------------------------------

    def _status_event(self, call: EmulatedCallState, event: str, status: str) -> None:
        if (
            not call.status_callback
            or event not in call.status_callback_events
            or not self.status_callbacks_enabled
        ):
            return
        params = self._call_params(call, status)
        params.update(
            CallbackSource="call-progress-events",
            SequenceNumber=str(call._sequence),
            Timestamp=_rfc2822(time.time()) or "",
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
        copies = 2 if self.duplicate_callbacks else 1
        if self.callback_order == "shuffled":
            for _ in range(copies):
                delay = random.uniform(0, _SHUFFLE_MAX_S)
                self._nursery.start_soon(self._deliver_later, call.callbacks, attempt, delay)
            return
        if call._outbox is None:
            send, receive = trio.open_memory_channel[WebhookAttempt](math.inf)
            call._outbox = send
            self._nursery.start_soon(self._deliver_in_order, call.callbacks, receive)
        for _ in range(copies):
            call._outbox.send_nowait(attempt)

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
        return await self._send_webhook(
            template.kind, template.url, template.method, template.params
        )

    async def _send_webhook(
        self, kind: str, url: str, method: str, params: dict[str, str]
    ) -> WebhookAttempt:
        """Send one signed webhook; record it (also in :attr:`callbacks`); never raise."""
        attempt = WebhookAttempt(kind, url, method, dict(params), trio.current_time())
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        try:
            if method == "GET":
                full = url + ("&" if "?" in url else "?") + urlencode(params)
                headers[SIGNATURE_HEADER] = compute_signature(full, {}, self.auth_token)
                response = await self._http.get(full, headers=headers)
            else:
                headers[SIGNATURE_HEADER] = compute_signature(url, params, self.auth_token)
                response = await self._http.post(url, data=params, headers=headers)
            attempt.status = response.status_code
            attempt.text = response.text
        except httpx.HTTPError as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
        self.callbacks.append(attempt)
        if not attempt.ok:
            log.info(
                "%s webhook %s %s failed: %s", kind, method, url, attempt.error or attempt.status
            )
        return attempt

    # -- messages -------------------------------------------------------------------------------

    def _create_message(self, form: list[tuple[str, str]]) -> _Reply:
        values = self.spec.validate_form(self.spec.operation("POST", _MESSAGES), form)
        window_fails = False
        try:
            check_create_message(values, self._session_open)
        except ApiError as exc:
            if exc.code != 63016 or self.whatsapp_window != "fail":
                raise
            window_fails = True

        def first(name: str) -> str | None:
            given = values.get(name)
            return given[0] if given else None

        to, from_ = values["To"][0], first("From")
        media = values.get("MediaUrl", [])
        body = first("Body") or ""
        whatsapp = to.startswith("whatsapp:")
        if first("ScheduleType") and first("SendAt"):
            status = "scheduled"
        elif first("MessagingServiceSid") and not from_:
            status = "accepted"
        else:
            status = "queued"
        sid = new_sid("MM" if media else "SM")
        now = _rfc2822(time.time())
        uri = f"{_PREFIX}{self.account_sid}/Messages/{sid}"
        resource = _fill(
            self._message_props,
            {
                "body": body,
                "num_segments": "1" if whatsapp else str(count_segments(body)),
                "direction": "outbound-api",
                "from": from_,
                "to": to,
                "date_updated": now,
                "uri": uri + ".json",
                "account_sid": self.account_sid,
                "num_media": str(len(media)),
                "status": status,
                "messaging_service_sid": first("MessagingServiceSid"),
                "sid": sid,
                "date_created": now,
                "api_version": API_VERSION,
                "subresource_uris": {
                    "media": f"{uri}/Media.json",
                    "feedback": f"{uri}/Feedback.json",
                },
            },
        )
        message = EmulatedMessage(resource, list(form))
        self.messages[sid] = message
        if status != "scheduled":
            self._nursery.start_soon(
                self._run_message, message, window_fails, name=f"emulated message {sid}"
            )
        return _Reply(201, dict(resource))

    def _update_message(self, message: EmulatedMessage, form: list[tuple[str, str]]) -> _Reply:
        values = self.spec.validate_form(self.spec.operation("POST", _MESSAGE), form)
        body, status = values.get("Body"), values.get("Status")
        if body is not None and body[0] != "":
            raise ApiError(400, 20001, "Body can only be redacted: set it to an empty string")
        if status is not None and message.status not in ("scheduled", "accepted", "queued"):
            raise ApiError(400, 20001, f"A {message.status} message cannot be canceled")
        if body is not None:
            message.resource["body"] = ""
        if status is not None:
            self._set_message_status(message, "canceled")
            message.settled.set()
        message.resource["date_updated"] = _rfc2822(time.time())
        return _Reply(200, dict(message.resource))

    def _set_message_status(self, message: EmulatedMessage, status: str) -> None:
        message.resource["status"] = status
        message.resource["date_updated"] = _rfc2822(time.time())
        message.progress.append(status)

    async def _run_message(self, message: EmulatedMessage, window_fails: bool) -> None:
        resource = message.resource
        whatsapp = str(resource["to"]).startswith("whatsapp:")
        steps = ["queued", "sending", "sent", "delivered"]
        if message.status == "queued":
            steps = steps[1:]
        for status in steps:
            await trio.sleep(_MESSAGE_STEP_S)
            if message.status == "canceled":
                return
            if window_fails and status == "sending":
                resource["error_code"] = 63016
                resource["error_message"] = (
                    "Failed to send freeform message because you are outside the allowed window."
                )
                status = "failed"
            self._set_message_status(message, status)
            if status == "sent":
                resource["date_sent"] = resource["date_updated"]
                unit = _WHATSAPP_PRICE if whatsapp else _SMS_PRICE_PER_SEGMENT
                segments = int(resource["num_segments"] or 1)
                resource["price"] = f"{-unit * segments:.5f}"
                resource["price_unit"] = "USD"
            if status in ("sent", "delivered", "failed"):
                self._message_callback(message)
            if status == "failed":
                break
        message.settled.set()

    def _message_callback(self, message: EmulatedMessage) -> None:
        callback = message.params.get("StatusCallback")
        if not callback or not self.status_callbacks_enabled:
            return
        resource = message.resource
        params = {
            "AccountSid": str(resource["account_sid"]),
            "ApiVersion": API_VERSION,
            "From": str(resource["from"] or ""),
            "MessageSid": message.sid,
            "MessageStatus": message.status,
            "SmsSid": message.sid,
            "SmsStatus": message.status,
            "To": str(resource["to"]),
        }
        if resource["messaging_service_sid"]:
            params["MessagingServiceSid"] = str(resource["messaging_service_sid"])
        if resource["error_code"] is not None:
            params["ErrorCode"] = str(resource["error_code"])
        attempt = WebhookAttempt("message-status", callback[0], "POST", params, 0.0)
        copies = 2 if self.duplicate_callbacks else 1
        shuffled = self.callback_order == "shuffled"
        for _ in range(copies):
            delay = random.uniform(0, _SHUFFLE_MAX_S) if shuffled else 0.0
            self._nursery.start_soon(self._deliver_later, message.callbacks, attempt, delay)

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
        user, business = _whatsapp(from_number), _whatsapp(to_number)
        sid = new_sid("MM" if media else "SM")
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "Body": body,
            "From": user,
            "MessageSid": sid,
            "MessageType": "image" if media else "text",
            "NumMedia": str(len(media)),
            "NumSegments": "1",
            "ProfileName": profile_name,
            "ReferralNumMedia": "0",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": business,
            "WaId": user.removeprefix("whatsapp:").lstrip("+"),
        }
        for index, (url, content_type) in enumerate(media):
            params[f"MediaUrl{index}"] = url
            params[f"MediaContentType{index}"] = content_type
        params.update(extra)
        self.open_whatsapp_session(user)
        now = _rfc2822(time.time())
        uri = f"{_PREFIX}{self.account_sid}/Messages/{sid}"
        resource = _fill(
            self._message_props,
            {
                "body": body,
                "num_segments": "1",
                "direction": "inbound",
                "from": user,
                "to": business,
                "date_updated": now,
                "uri": uri + ".json",
                "account_sid": self.account_sid,
                "num_media": str(len(media)),
                "status": "received",
                "sid": sid,
                "date_created": now,
                "date_sent": now,
                "api_version": API_VERSION,
                "subresource_uris": {"media": f"{uri}/Media.json"},
            },
        )
        message = EmulatedMessage(resource, sorted(params.items()))
        message.settled.set()
        self.messages[sid] = message
        headers = {
            SIGNATURE_HEADER: compute_signature(server_url, params, self.auth_token),
            "User-Agent": "TwilioProxy/1.1",
        }
        attempt = WebhookAttempt("inbound-message", server_url, "POST", params, trio.current_time())
        try:
            response = await self._http.post(server_url, data=params, headers=headers)
        except httpx.HTTPError as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            message.callbacks.append(attempt)
            self.callbacks.append(attempt)
        attempt.status = response.status_code
        attempt.text = response.text
        return response

    # -- serving --------------------------------------------------------------------------------

    async def _serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        config = HypercornConfig()
        config.bind = [f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                partial(hypercorn_serve, self._asgi, config, mode="asgi")
            )
            self.base_url = binds[0].rstrip("/")
            task_status.started(self.base_url)


@asynccontextmanager
async def open_twilio_emulator(
    *,
    spec_path: Path | PathLike[str] | str,
    account_sid: str | None = None,
    auth_token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[TwilioEmulator]:
    """Run the emulated Twilio REST API on ``host:port`` (0: a free port) until the block exits.

    ``spec_path`` is Twilio's OpenAPI document ``twilio_api_v2010.json``. The account SID and
    Auth Token are generated unless given. On exit every call, message and callback in flight is
    cancelled (a live media stream still gets its ``stop``).
    """
    spec = ApiSpec.load(Path(spec_path))
    async with httpx.AsyncClient(timeout=10) as http, trio.open_nursery() as nursery:
        emulator = TwilioEmulator(
            spec,
            account_sid=account_sid or new_sid("AC"),
            auth_token=auth_token or secrets.token_hex(16),
            http=http,
            nursery=nursery,
        )
        await nursery.start(emulator._serve, host, port)
        try:
            yield emulator
        finally:
            nursery.cancel_scope.cancel()
