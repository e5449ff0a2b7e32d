"""The messaging actions: ``sendSMS`` and ``sendWhatsAppMessage``, and their output shape.

Inputs are checked before any request, by the component's shared checks
(:mod:`engine.control.validation`): sendSMS ``To`` an E.164 number or channel address, ``From``
an E.164 number, alphanumeric sender ID, short code or channel address; WhatsApp addresses
E.164 (``whatsapp:`` added when missing); a body at most 1600 characters; a template send its
``ContentSid`` (``HX…``) and ``ContentVariables`` as an object, never with a ``Body``.
Twilio's snake_case Message resource becomes the component's camelCase output object.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import iso4217

from engine.control.rest import TwilioClient
from engine.control.validation import MAX_BODY, e164, sms_params, whatsapp_params

__all__ = [
    "MAX_BODY",
    "e164",
    "message_output",
    "send_sms",
    "send_whatsapp",
]


async def send_sms(client: TwilioClient, *, to: str, from_: str, body: str) -> dict[str, Any]:
    """Send an SMS; return the message output object.

    ``from_`` may be an E.164 number, an alphanumeric sender ID, a short code or a channel
    address; raises :class:`~engine.errors.InvalidInput` (nothing sent) for bad input.
    """
    params = sms_params(to=to, from_=from_, body=body)
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
    ``content_variables``, sent as a JSON string); the ``whatsapp:`` prefix is added if missing.

    Fields that do not belong to the chosen kind (variables with free text, a body with a
    template) are refused, not dropped: :class:`~engine.errors.InvalidInput`, nothing sent.
    """
    params = whatsapp_params(
        to=to,
        from_=from_,
        use_template=use_template,
        body=body,
        content_sid=content_sid,
        content_variables=content_variables,
    )
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
