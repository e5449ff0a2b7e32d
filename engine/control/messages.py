"""The messaging actions: ``sendSMS`` and ``sendWhatsAppMessage``, and their output shape.

Inputs are checked before any request: ``To``/``From`` must be E.164 numbers (checked with
``phonenumbers``), a body at most 1600 characters, and a template send needs its ``ContentSid``.
Twilio's snake_case Message resource becomes the component's camelCase output object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import iso4217
import phonenumbers

from engine.control.rest import FormValue, TwilioClient
from engine.errors import InvalidInput

__all__ = [
    "MAX_BODY",
    "e164",
    "message_output",
    "send_sms",
    "send_whatsapp",
]

MAX_BODY = 1600
WHATSAPP = "whatsapp:"


def e164(value: str, field: str) -> str:
    """``value`` as a valid E.164 number, or :class:`InvalidInput` naming ``field``."""
    text = (value or "").strip()
    if not text.startswith("+"):
        raise InvalidInput(field, f"{value!r} is not an E.164 number (expected +<country><number>)")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidInput(field, f"{value!r} is not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput(field, f"{value!r} is not a valid phone number")
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if formatted != text:
        raise InvalidInput(field, f"{value!r} is not in E.164 form (did you mean {formatted}?)")
    return formatted


def _whatsapp(value: str, field: str) -> str:
    number = value[len(WHATSAPP) :] if value.startswith(WHATSAPP) else value
    return WHATSAPP + e164(number, field)


def _body(body: str | None) -> str:
    if not body:
        raise InvalidInput("Body", "is required")
    if len(body) > MAX_BODY:
        raise InvalidInput("Body", f"is {len(body)} characters; Twilio takes at most {MAX_BODY}")
    return body


async def send_sms(client: TwilioClient, *, to: str, from_: str, body: str) -> dict[str, Any]:
    """Send an SMS; return the message output object."""
    params = {"To": e164(to, "To"), "From": e164(from_, "From"), "Body": _body(body)}
    return message_output(await client.request("POST", "Messages.json", params))


async def send_whatsapp(
    client: TwilioClient,
    *,
    to: str,
    from_: str,
    use_template: bool,
    body: str | None = None,
    content_sid: str | None = None,
    content_variables: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Send a WhatsApp message: free text (``body``) or an approved template (``content_sid`` +
    ``content_variables``, sent as a JSON string); the ``whatsapp:`` prefix is added if missing."""
    params: dict[str, FormValue] = {"To": _whatsapp(to, "To"), "From": _whatsapp(from_, "From")}
    if use_template:
        if not content_sid:
            raise InvalidInput("ContentSid", "is required when useTemplate is true")
        if not content_sid.startswith("HX"):
            raise InvalidInput("ContentSid", f"{content_sid!r} is not a Content SID (HX…)")
        params["ContentSid"] = content_sid
        if content_variables:
            if not isinstance(content_variables, Mapping):
                raise InvalidInput("ContentVariables", "must be an object")
            params["ContentVariables"] = json.dumps(
                {str(k): v for k, v in content_variables.items()}, ensure_ascii=False
            )
    else:
        params["Body"] = _body(body)
    return message_output(await client.request("POST", "Messages.json", params))


def _date(value: str | None) -> dict[str, str] | None:
    if not value:
        return None
    moment = parsedate_to_datetime(value)
    offset = moment.utcoffset()
    if offset is None or not offset:
        zone = "Z"
    else:
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return {"dateTime": moment.replace(tzinfo=None).isoformat(timespec="seconds"), "zoneId": zone}


def _currency(code: str | None) -> dict[str, Any] | None:
    if not code:
        return None
    try:
        currency = iso4217.Currency(code.upper())
    except (KeyError, ValueError):
        return {"currencyCode": code.upper(), "defaultFractionDigits": None, "numericCode": None}
    return {
        "currencyCode": currency.code,
        "defaultFractionDigits": currency.exponent,
        "numericCode": currency.number,
    }


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def message_output(resource: Mapping[str, Any]) -> dict[str, Any]:
    """Twilio's Message resource as the component's output object (camelCase, typed)."""
    error_code = resource.get("error_code")
    return {
        "body": resource.get("body"),
        "numSegments": _str_or_none(resource.get("num_segments")),
        "direction": resource.get("direction"),
        "from": {"rawNumber": resource.get("from")},
        "to": resource.get("to"),
        "dateUpdated": _date(resource.get("date_updated")),
        "price": _str_or_none(resource.get("price")),
        "errorMessage": resource.get("error_message"),
        "uri": resource.get("uri"),
        "accountSid": resource.get("account_sid"),
        "numMedia": _str_or_none(resource.get("num_media")),
        "status": resource.get("status"),
        "messagingServiceSid": resource.get("messaging_service_sid"),
        "sid": resource.get("sid"),
        "dateSent": _date(resource.get("date_sent")),
        "dateCreated": _date(resource.get("date_created")),
        "errorCode": int(error_code) if error_code is not None else None,
        "currency": _currency(resource.get("price_unit")),
        "apiVersion": resource.get("api_version"),
        "subresourceUris": dict(resource.get("subresource_uris") or {}),
    }
