"""An emulated Twilio REST API: a real HTTP server on loopback for your tests.

:func:`open_twilio_emulator` serves the parts of Twilio's 2010-04-01 API that the engine uses —
create, fetch, update, list and delete Calls and Messages — the way Twilio answers them:

- HTTP Basic auth with the account SID and Auth Token, or an API key (``SK…`` + secret);
  otherwise 401 with Twilio's error JSON (code 20003). Another account's path answers 404 (20404).
- Request bodies are checked against Twilio's own OpenAPI document (loaded from ``spec_path``,
  see :mod:`~engine.testing.twilio_api.spec`) and Twilio's semantic rules
  (:mod:`~engine.testing.twilio_api.rules`); failures answer Twilio's error JSON
  ``{"code", "message", "more_info", "status"}``.
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

Modules, each depending only on those listed before it: :mod:`~engine.testing.twilio_api.spec`,
:mod:`~engine.testing.twilio_api.rules` and :mod:`~engine.testing.twilio_api.resources` (Twilio's
API description, rules and resource shapes); :mod:`~engine.testing.twilio_api.records` (calls,
messages, requests and webhook attempts as recorded); :mod:`~engine.testing.twilio_api.account`
(the :class:`Account`: settings and records, shared by the parts);
:mod:`~engine.testing.twilio_api.webhooks` (signed webhooks);
:mod:`~engine.testing.twilio_api.call_lifecycle` (how a call runs);
:mod:`~engine.testing.twilio_api.calls` and :mod:`~engine.testing.twilio_api.messages` (the
endpoints); :mod:`~engine.testing.twilio_api.server` (HTTP, auth, faults, routing); and
:mod:`~engine.testing.twilio_api.emulator` (:class:`TwilioEmulator`, which composes them, and
:func:`open_twilio_emulator`).
"""

from engine.testing.twilio_api.account import Account, CallbackOrder
from engine.testing.twilio_api.emulator import TwilioEmulator, open_twilio_emulator
from engine.testing.twilio_api.records import (
    CalleeBehaviour,
    EmulatedCallState,
    EmulatedMessage,
    Outcome,
    RecordedRequest,
    WebhookAttempt,
)
from engine.testing.twilio_api.resources import API_VERSION

__all__ = [
    "API_VERSION",
    "Account",
    "CallbackOrder",
    "CalleeBehaviour",
    "EmulatedCallState",
    "EmulatedMessage",
    "Outcome",
    "RecordedRequest",
    "TwilioEmulator",
    "WebhookAttempt",
    "open_twilio_emulator",
]
