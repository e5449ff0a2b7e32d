"""The Calls endpoints of the emulated API: create, update, and each call as its REST resource.

:class:`CallsEndpoint` checks each request, records the call in the
:class:`~engine.testing.twilio_api.account.Account` (an
:class:`~engine.testing.twilio_api.records.EmulatedCallState`) and hands it to the
:class:`~engine.testing.twilio_api.call_lifecycle.CallLifecycle`, which runs it.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import trio

from engine.testing.stream import new_sid
from engine.testing.twilio_api.account import Account
from engine.testing.twilio_api.call_lifecycle import CallLifecycle
from engine.testing.twilio_api.records import FINAL_STATUSES, EmulatedCallState, TwimlSource
from engine.testing.twilio_api.resources import (
    ACCOUNTS_PREFIX,
    API_VERSION,
    CALL_PATH,
    CALLS_PATH,
    fill_resource,
    rfc2822,
)
from engine.testing.twilio_api.rules import MAX_TWIML_CHARS, check_create_call, format_number
from engine.testing.twilio_api.spec import ApiError, ApiSpec, FormValues, first_value

__all__ = ["CallsEndpoint"]

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

    def __init__(self, account: Account, spec: ApiSpec, lifecycle: CallLifecycle) -> None:
        self._account = account
        self._spec = spec
        self._lifecycle = lifecycle
        self._properties = spec.resource_properties("api.v2010.account.call")

    def create(self, form: list[tuple[str, str]]) -> dict[str, Any]:
        """``CreateCall``: check ``form``, start the call, and return its resource.

        Raises :class:`~engine.testing.twilio_api.spec.ApiError` for a request Twilio refuses.
        """
        account = self._account
        values = self._spec.validate_form(self._spec.operation("POST", CALLS_PATH), form)
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
            behaviour=account.callee(to),
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
        values = self._spec.validate_form(self._spec.operation("POST", CALL_PATH), form)

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
