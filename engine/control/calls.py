"""The ``makeCall`` action: place a call that runs a pipeline live, return when it has ended.

The call is created with ``Url`` pointing at our own ``/twilio/voice`` (the pipeline named in
its query string), so the TwiML — with a stream token bound to the CallSid — is made when
Twilio answers. Status callbacks to ``/twilio/status`` wake the waiting action; when none
arrive (they may land on another worker process), it polls ``GET …/Calls/{Sid}.json`` with
backoff: Twilio, not our memory, holds the call's state. Past ``maxDuration`` the call is hung
up for real (``Status=completed``) and the result says ``timeout``.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import trio

from engine.control import validation
from engine.control.rest import TwilioClient
from engine.errors import TwilioAPIError

__all__ = ["FINAL_STATUSES", "CallStatusBoard", "StatusUpdate", "call_params", "make_call"]

log = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """The newest status known for a call, from a callback or a fetch."""

    call_sid: str
    status: str
    sequence: int
    duration: int | None
    direction: str | None


class CallStatusBoard:
    """Status callbacks by CallSid, for the ``makeCall`` s waiting in this process.

    Duplicated callbacks are harmless and an older ``SequenceNumber`` never overwrites a newer
    one. At most ``capacity`` calls are remembered (oldest forgotten first): the board is a
    shortcut, Twilio's REST API stays the source of truth.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._latest: OrderedDict[str, StatusUpdate] = OrderedDict()
        self._changed: dict[str, trio.Event] = {}

    def post(self, fields: Mapping[str, str]) -> StatusUpdate | None:
        """Record one status callback's form fields; returns the update if it was news."""
        call_sid = fields.get("CallSid", "")
        status = fields.get("CallStatus", "")
        if not call_sid or not status:
            return None
        try:
            sequence = int(fields.get("SequenceNumber", "0"))
        except ValueError:
            sequence = 0
        previous = self._latest.get(call_sid)
        if previous is not None and (
            previous.sequence >= sequence or previous.status in FINAL_STATUSES
        ):
            return None
        duration = fields.get("CallDuration")
        update = StatusUpdate(
            call_sid,
            status,
            sequence,
            # ASCII digits only: "²".isdigit() is True, and int() takes at most 4300 digits.
            int(duration)
            if duration and duration.isascii() and duration.isdigit() and len(duration) <= 18
            else None,
            fields.get("Direction"),
        )
        self._latest[call_sid] = update
        self._latest.move_to_end(call_sid)
        while len(self._latest) > self._capacity:
            self._latest.popitem(last=False)
        event = self._changed.pop(call_sid, None)
        if event is not None:
            event.set()
        return update

    def latest(self, call_sid: str) -> StatusUpdate | None:
        """The newest update for ``call_sid``, if any arrived."""
        return self._latest.get(call_sid)

    async def wait_for_change(self, call_sid: str) -> None:
        """Wait until a newer update for ``call_sid`` arrives."""
        event = self._changed.setdefault(call_sid, trio.Event())
        await event.wait()

    def forget(self, call_sid: str) -> None:
        """Drop what is known of ``call_sid`` (its waiter is done)."""
        self._latest.pop(call_sid, None)
        self._changed.pop(call_sid, None)


def _outcome(resource: Mapping[str, Any], status: str | None = None) -> dict[str, Any]:
    duration = resource.get("duration")
    return {
        "callSid": resource.get("sid"),
        "status": status or resource.get("status"),
        "duration": int(duration) if duration not in (None, "") else 0,
        "direction": resource.get("direction") or "outbound-api",
    }


def call_params(
    *,
    to: object,
    from_: object,
    public_url: str,
    pipeline: object,
    ring_timeout: object = None,
    max_duration: object = None,
) -> dict[str, str | list[str]]:
    """makeCall's ``CreateCall`` fields, checked (:class:`~engine.errors.InvalidInput` names the
    documented parameter: ``To``, ``From``, ``subWorkflow``, ``timeout``, ``maxDuration``).

    ``Timeout`` is the ring time in seconds; ``TimeLimit`` the ``maxDuration`` minutes in whole
    seconds, rounded up.
    """
    checked_to, checked_from = validation.e164(to, "To"), validation.e164(from_, "From")
    name = validation.pipeline_name(pipeline)
    ring = validation.ring_timeout(ring_timeout)
    minutes = validation.max_duration(max_duration)
    base = public_url.rstrip("/")
    params: dict[str, str | list[str]] = {
        "To": checked_to,
        "From": checked_from,
        "Url": f"{base}/twilio/voice?{urlencode({'pipeline': name})}",
        "Method": "POST",
        "StatusCallback": f"{base}/twilio/status",
        "StatusCallbackMethod": "POST",
        "StatusCallbackEvent": list(STATUS_EVENTS),
    }
    if ring is not None:
        params["Timeout"] = str(ring)
    if minutes is not None:
        params["TimeLimit"] = str(max(1, math.ceil(minutes * 60)))
    return params


async def make_call(
    client: TwilioClient,
    board: CallStatusBoard,
    *,
    to: str,
    from_: str,
    public_url: str,
    pipeline: str,
    ring_timeout: int | None = None,
    max_duration: float | None = None,
    first_poll: float = 5.0,
    max_poll: float = 30.0,
) -> dict[str, Any]:
    """Place a call running ``pipeline`` on our server at ``public_url``; return at its end.

    ``ring_timeout`` (the component's ``timeout``) is the ring time in seconds (Twilio: 1–600,
    default 60); ``max_duration`` the minutes to wait for the call to end (fractions allowed),
    after which it is hung up and the result's status is ``timeout``. Returns
    ``{callSid, status, duration, direction}``. Bad input raises
    :class:`~engine.errors.InvalidInput` before any request (see :func:`call_params`).
    """
    params = call_params(
        to=to,
        from_=from_,
        public_url=public_url,
        pipeline=pipeline,
        ring_timeout=ring_timeout,
        max_duration=max_duration,
    )
    to = str(params["To"])
    minutes = validation.max_duration(max_duration)
    deadline = trio.current_time() + minutes * 60 if minutes else math.inf
    created = await client.request("POST", "Calls.json", params)
    call_sid = str(created["sid"])
    log.info("call %s placed to %s (pipeline %s)", call_sid, to, pipeline)
    try:
        return await _wait_for_end(client, board, call_sid, deadline, first_poll, max_poll)
    finally:
        board.forget(call_sid)


async def _wait_for_end(
    client: TwilioClient,
    board: CallStatusBoard,
    call_sid: str,
    deadline: float,
    first_poll: float,
    max_poll: float,
) -> dict[str, Any]:
    poll_every = first_poll
    path = f"Calls/{call_sid}.json"
    while True:
        update = board.latest(call_sid)
        if update is not None and update.status in FINAL_STATUSES:
            # The callback says it ended; the resource has the final duration and direction.
            return _outcome(await client.request("GET", path))
        wake = min(deadline, trio.current_time() + poll_every)
        with trio.move_on_at(wake):
            await board.wait_for_change(call_sid)
            poll_every = first_poll  # callbacks are arriving: keep polling slow and steady
            continue
        if trio.current_time() >= deadline:
            return await _hang_up(client, call_sid)
        poll_every = min(max_poll, poll_every * 2)
        try:
            resource = await client.request("GET", path)
        except TwilioAPIError as exc:
            if exc.status != 0 and exc.status < 500:
                raise
            # A server error or no answer on a read: the call goes on either way, so ask again
            # later rather than abandon it (and its maxDuration) to run unwatched.
            log.warning("call %s: status poll failed (%s); polling on", call_sid, exc)
            continue
        if resource.get("status") in FINAL_STATUSES:
            return _outcome(resource)


async def _hang_up(client: TwilioClient, call_sid: str) -> dict[str, Any]:
    path = f"Calls/{call_sid}.json"
    resource = await client.request("GET", path)
    status = resource.get("status")
    if status in FINAL_STATUSES:
        return _outcome(resource)
    new_status = "canceled" if status in ("queued", "ringing", "initiated") else "completed"
    log.info("call %s passed maxDuration: hanging up (%s)", call_sid, new_status)
    try:
        resource = await client.request("POST", path, {"Status": new_status})
    except TwilioAPIError as exc:
        if exc.status != 400:  # 400: it ended on its own meanwhile
            raise
        resource = await client.request("GET", path)
    return _outcome(resource, "timeout")
