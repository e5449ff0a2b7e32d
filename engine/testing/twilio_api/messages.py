"""Messages on the emulated API: SMS and WhatsApp, sent through the API or received from a user.

:class:`MessagesEndpoint` creates and updates messages and takes each one queued → sending →
sent → delivered, with signed status callbacks; it also posts inbound WhatsApp messages to a
server, opening the 24-hour session that free-form replies need.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import trio

from engine.testing.stream import new_sid
from engine.testing.twilio_api.account import Account, whatsapp_address
from engine.testing.twilio_api.records import EmulatedMessage, WebhookAttempt
from engine.testing.twilio_api.resources import (
    ACCOUNTS_PREFIX,
    API_VERSION,
    MESSAGE_PATH,
    MESSAGES_PATH,
    fill_resource,
    rfc2822,
)
from engine.testing.twilio_api.rules import check_create_message, count_segments
from engine.testing.twilio_api.spec import ApiError, ApiSpec, first_value
from engine.testing.twilio_api.webhooks import WebhookSender

__all__ = ["MessagesEndpoint"]

_MESSAGE_STEP_S = 0.03
"""Real seconds between a message's queued, sending, sent and delivered steps."""
_SMS_PRICE_PER_SEGMENT = 0.0075
_WHATSAPP_PRICE = 0.005


class MessagesEndpoint:
    """The emulated account's Messages: create, update, deliver, and receive from WhatsApp."""

    def __init__(
        self, account: Account, spec: ApiSpec, webhooks: WebhookSender, nursery: trio.Nursery
    ) -> None:
        self._account = account
        self._spec = spec
        self._webhooks = webhooks
        self._nursery = nursery
        self._properties = spec.resource_properties("api.v2010.account.message")

    def create(self, form: list[tuple[str, str]]) -> dict[str, Any]:
        """``CreateMessage``: check ``form``, start delivering, and return the resource.

        Raises :class:`~engine.testing.twilio_api.spec.ApiError` for a request Twilio refuses.
        """
        account = self._account
        values = self._spec.validate_form(self._spec.operation("POST", MESSAGES_PATH), form)
        window_fails = False
        try:
            check_create_message(values, account.whatsapp_session_open)
        except ApiError as exc:
            if exc.code != 63016 or account.whatsapp_window != "fail":
                raise
            window_fails = True

        def first(name: str) -> str | None:
            return first_value(values, name)

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
        now = rfc2822(time.time())
        uri = f"{ACCOUNTS_PREFIX}{account.account_sid}/Messages/{sid}"
        resource = fill_resource(
            self._properties,
            {
                "body": body,
                "num_segments": "1" if whatsapp else str(count_segments(body)),
                "direction": "outbound-api",
                "from": from_,
                "to": to,
                "date_updated": now,
                "uri": uri + ".json",
                "account_sid": account.account_sid,
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
        account.messages[sid] = message
        if status != "scheduled":
            self._nursery.start_soon(
                self._run_message, message, window_fails, name=f"emulated message {sid}"
            )
        return dict(resource)

    def update(self, message: EmulatedMessage, form: list[tuple[str, str]]) -> dict[str, Any]:
        """``UpdateMessage``: redact the body or cancel ``message``; return its resource.

        Raises :class:`~engine.testing.twilio_api.spec.ApiError` for a request Twilio refuses.
        """
        values = self._spec.validate_form(self._spec.operation("POST", MESSAGE_PATH), form)
        body, status = values.get("Body"), values.get("Status")
        if body is not None and body[0] != "":
            raise ApiError(400, 20001, "Body can only be redacted: set it to an empty string")
        if status is not None and message.status not in ("scheduled", "accepted", "queued"):
            raise ApiError(400, 20001, f"A {message.status} message cannot be canceled")
        if body is not None:
            message.resource["body"] = ""
        if status is not None:
            self._set_status(message, "canceled")
            message.settled.set()
        message.resource["date_updated"] = rfc2822(time.time())
        return dict(message.resource)

    async def receive_whatsapp(
        self,
        server_url: str,
        *,
        body: str,
        from_number: str,
        to_number: str,
        profile_name: str,
        media: Sequence[tuple[str, str]],
        extra: Mapping[str, str],
    ) -> httpx.Response:
        """Post a user's WhatsApp message to ``server_url``; see
        :meth:`~engine.testing.twilio_api.emulator.TwilioEmulator.post_whatsapp_message`.
        """
        account = self._account
        user, business = whatsapp_address(from_number), whatsapp_address(to_number)
        sid = new_sid("MM" if media else "SM")
        params = {
            "AccountSid": account.account_sid,
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
        account.open_whatsapp_session(user)
        now = rfc2822(time.time())
        uri = f"{ACCOUNTS_PREFIX}{account.account_sid}/Messages/{sid}"
        resource = fill_resource(
            self._properties,
            {
                "body": body,
                "num_segments": "1",
                "direction": "inbound",
                "from": user,
                "to": business,
                "date_updated": now,
                "uri": uri + ".json",
                "account_sid": account.account_sid,
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
        account.messages[sid] = message
        return await self._webhooks.post_inbound(server_url, params, message.callbacks)

    def _set_status(self, message: EmulatedMessage, status: str) -> None:
        message.resource["status"] = status
        message.resource["date_updated"] = rfc2822(time.time())
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
            self._set_status(message, status)
            if status == "sent":
                resource["date_sent"] = resource["date_updated"]
                unit = _WHATSAPP_PRICE if whatsapp else _SMS_PRICE_PER_SEGMENT
                segments = int(resource["num_segments"] or 1)
                resource["price"] = f"{-unit * segments:.5f}"
                resource["price_unit"] = "USD"
            if status in ("sent", "delivered", "failed"):
                self._status_callback(message)
            if status == "failed":
                break
        message.settled.set()

    def _status_callback(self, message: EmulatedMessage) -> None:
        callback = message.params.get("StatusCallback")
        if not callback or not self._account.status_callbacks_enabled:
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
        self._webhooks.send_status(message.callbacks, attempt)
