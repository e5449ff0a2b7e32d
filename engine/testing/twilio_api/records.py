"""What the emulated account records: each call, message, API request and webhook attempt.

Plain data, shared by the emulator's parts and read by tests: :class:`EmulatedCallState` (with
the :class:`CalleeBehaviour` its number was scripted with and the :class:`TwimlSource` it
follows), :class:`EmulatedMessage`, :class:`RecordedRequest` and :class:`WebhookAttempt`. The
:class:`~engine.testing.twilio_api.account.Account` holds them; nothing here acts on its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from engine.testing.stream import EmulatedStream, StreamRecord
from engine.testing.twilio_api.spec import FormValues

__all__ = [
    "FINAL_STATUSES",
    "CalleeBehaviour",
    "EmulatedCallState",
    "EmulatedMessage",
    "Outcome",
    "RecordedRequest",
    "TwimlSource",
    "WebhookAttempt",
]

Outcome = Literal["answer", "busy", "no-answer", "fail"]
"""How a dialled number answers: it picks up, is busy, never answers, or the call fails."""

FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
"""The statuses a call ends in."""


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
