"""An emulated inbound call: Twilio's webhook request, the TwiML it gets back, then the stream.

:func:`open_inbound_call` does what Twilio does when someone dials your number: it POSTs the
signed voice webhook (``/twilio/voice``), reads the ``<Connect><Stream>`` TwiML of the answer,
and dials the stream URL with the ``<Parameter>`` values as ``customParameters``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from engine.control.signature import compute_signature
from engine.control.twiml import ConnectStream, parse_connect_stream
from engine.errors import EngineError
from engine.testing.stream import EmulatedStream, new_sid, open_stream

__all__ = [
    "CallRefused",
    "EmulatorError",
    "InboundCall",
    "open_answered_stream",
    "open_inbound_call",
    "ring",
]


class EmulatorError(EngineError):
    """The server under test answered the emulated Twilio in a way Twilio would not accept."""


class CallRefused(EngineError):
    """The server answered the call with TwiML that does not stream it (``<Reject>``, or
    ``<Say>`` then ``<Hangup>``): well-formed, but the call never reaches a pipeline."""

    def __init__(self, twiml: str) -> None:
        super().__init__(f"call refused: {twiml}")
        self.twiml = twiml


@dataclass(frozen=True, slots=True)
class InboundCall:
    """A call that has rung and been answered with TwiML."""

    call_sid: str
    account_sid: str
    from_number: str
    to_number: str
    connect: ConnectStream


async def ring(
    public_url: str,
    auth_token: str | None,
    *,
    from_number: str = "+15017122661",
    to_number: str = "+15558675310",
    account_sid: str | None = None,
    call_sid: str | None = None,
    path: str = "/twilio/voice",
    client: httpx.AsyncClient | None = None,
) -> InboundCall:
    """POST the voice webhook as Twilio does and follow the TwiML it returns.

    Raises :class:`CallRefused` when the answer is TwiML that does not connect a stream, and
    :class:`EmulatorError` when it is not an answer Twilio would accept.

    Pass ``client`` to reuse connections when ringing many times (making a client is slow).
    """
    call_sid = call_sid or new_sid("CA")
    account_sid = account_sid or new_sid("AC")
    params = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to_number,
        "Caller": from_number,
        "Direction": "inbound",
        "From": from_number,
        "To": to_number,
    }
    url = public_url.rstrip("/") + path
    headers = {"User-Agent": "TwilioProxy/1.1"}
    if auth_token is not None:
        headers["X-Twilio-Signature"] = compute_signature(url, params, auth_token)
    if client is None:
        async with httpx.AsyncClient(timeout=10) as own:
            response = await own.post(url, data=params, headers=headers)
    else:
        response = await client.post(url, data=params, headers=headers)
    if response.status_code != 200:
        raise EmulatorError(f"voice webhook answered HTTP {response.status_code}: {response.text}")
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith(("text/xml", "application/xml")):
        raise EmulatorError(f"voice webhook answered {content_type!r}, not TwiML")
    try:
        connect = parse_connect_stream(response.text)
    except ValueError as exc:
        if "holds no <Connect><Stream>" in str(exc):
            raise CallRefused(response.text) from None
        raise EmulatorError(f"voice webhook TwiML: {exc}") from exc
    return InboundCall(call_sid, account_sid, from_number, to_number, connect)


@asynccontextmanager
async def open_inbound_call(
    public_url: str, auth_token: str | None, **ring_options: Any
) -> AsyncIterator[EmulatedStream]:
    """Ring the server at ``public_url`` and stream the answered call until the block exits."""
    call = await ring(public_url, auth_token, **ring_options)
    async with open_answered_stream(call, auth_token) as stream:
        yield stream


def open_answered_stream(
    call: InboundCall, auth_token: str | None
) -> AbstractAsyncContextManager[EmulatedStream]:
    """Dial the stream of a call :func:`ring` answered, as Twilio does after the TwiML."""
    return open_stream(
        call.connect.url,
        auth_token=auth_token,
        call_sid=call.call_sid,
        account_sid=call.account_sid,
        parameters=call.connect.parameters,
    )
