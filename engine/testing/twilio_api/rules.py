"""Twilio's own rules for the emulated API, beyond what its OpenAPI description says.

PROTOCOL.md §4.1, §4.3 and §6: :func:`check_create_call` and :func:`check_create_message`,
E.164 addresses (:func:`is_e164`), the magic test numbers, and SMS segmentation
(:func:`count_segments`). Every failure is an :class:`~engine.testing.twilio_api.spec.ApiError`
carrying Twilio's HTTP status, error code and message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from engine.testing.twilio_api.spec import ApiError, FormValues, first_value

__all__ = [
    "MAX_BODY_CHARS",
    "MAX_TWIML_CHARS",
    "check_create_call",
    "check_create_message",
    "count_segments",
    "format_number",
    "is_e164",
    "is_gsm7",
]

MAX_TWIML_CHARS = 4000
"""Longest inline ``Twiml`` a call accepts (PROTOCOL.md §4.1)."""
MAX_BODY_CHARS = 1600
"""Longest message ``Body`` (PROTOCOL.md §4.3)."""

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_SHORT_CODE = re.compile(r"^\d{5,6}$")

# Twilio's test numbers (PROTOCOL.md §4; Twilio's "test credentials" page): To → error.
_MAGIC_CALL_TO = {
    "+15005550001": (21211, "Invalid 'To' Phone Number: +15005550001"),
    "+15005550002": (21214, "'To' phone number cannot be reached"),
    "+15005550003": (21215, "Account not authorized to call +15005550003"),
    "+15005550004": (21216, "Call blocked by Twilio blocklist"),
}
_MAGIC_MESSAGE_TO = {
    "+15005550001": (21211, "Invalid 'To' Phone Number: +15005550001"),
    "+15005550002": (21612, "The 'To' phone number is not currently reachable via SMS"),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for the region"),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}


def is_e164(number: str) -> bool:
    """Whether ``number`` is an E.164 phone number: ``+``, then 2–15 digits not starting with 0."""
    return _E164.match(number) is not None


def format_number(number: str) -> str:
    """A number as Twilio's ``*_formatted`` fields show it: ``(415) 867-5309`` in the NANP."""
    if len(number) == 12 and number.startswith("+1") and number[1:].isdigit():
        return f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    return number


def check_create_call(values: FormValues) -> None:
    """Twilio's rules for ``CreateCall`` beyond the spec (PROTOCOL.md §4.1, §6).

    ``To``: E.164, ``client:`` or ``sip:`` (21211; the magic test numbers give their errors);
    ``From``: E.164 or ``client:`` (21212); one of ``Url``, ``Twiml``, ``ApplicationSid``
    (21205); ``Twiml`` at most 4000 characters (20001).
    """
    to = first_value(values, "To") or ""
    from_ = first_value(values, "From") or ""
    if to in _MAGIC_CALL_TO:
        code, message = _MAGIC_CALL_TO[to]
        raise ApiError(400, code, message)
    if not (is_e164(to) or to.startswith(("client:", "sip:"))):
        raise ApiError(400, 21211, f"Invalid 'To' Phone Number: {to}")
    if from_ == "+15005550001" or not (is_e164(from_) or from_.startswith("client:")):
        raise ApiError(400, 21212, f"Invalid 'From' Phone Number: {from_}")
    if not any(first_value(values, name) for name in ("Url", "Twiml", "ApplicationSid")):
        raise ApiError(400, 21205, "Either a 'Url', 'Twiml' or 'ApplicationSid' is required")
    twiml = first_value(values, "Twiml") or ""
    if len(twiml) > MAX_TWIML_CHARS:
        raise ApiError(
            400,
            20001,
            f"Twiml is {len(twiml)} characters long; at most {MAX_TWIML_CHARS} are allowed",
        )


def _whatsapp_number(address: str) -> str | None:
    """The E.164 part of ``whatsapp:+E164``, or ``None`` for another address."""
    return address[len("whatsapp:") :] if address.startswith("whatsapp:") else None


def check_create_message(values: FormValues, session_open: Callable[[str], bool]) -> None:
    """Twilio's rules for ``CreateMessage`` beyond the spec (PROTOCOL.md §4.3, §6).

    ``To``: E.164 or ``whatsapp:+E164`` (21211; magic numbers give their errors); a sender,
    ``From`` or ``MessagingServiceSid`` (21603), and ``From`` valid (21212: E.164, WhatsApp,
    alphanumeric sender ID or short code) and on the same channel as ``To`` (21910); content,
    ``Body``, ``MediaUrl`` or ``ContentSid`` (21602); ``Body`` at most 1600 characters (21617);
    ``ContentVariables`` a JSON object string (21656); and a free-form WhatsApp message (no
    ``ContentSid``) only inside the 24-hour session window ``session_open(To)`` reports (63016).
    """
    to = first_value(values, "To") or ""
    to_whatsapp = _whatsapp_number(to)
    to_number = to_whatsapp if to_whatsapp is not None else to
    if to_number in _MAGIC_MESSAGE_TO:
        code, message = _MAGIC_MESSAGE_TO[to_number]
        raise ApiError(400, code, message)
    if not is_e164(to_number):
        raise ApiError(400, 21211, f"Invalid 'To' Phone Number: {to}")
    from_ = first_value(values, "From")
    if not from_ and not first_value(values, "MessagingServiceSid"):
        raise ApiError(400, 21603, "A 'From' phone number or a 'MessagingServiceSid' is required")
    if from_:
        from_whatsapp = _whatsapp_number(from_)
        if from_whatsapp is not None:
            valid = is_e164(from_whatsapp)
        else:
            valid = bool(
                is_e164(from_) or _ALPHANUMERIC_SENDER.match(from_) or _SHORT_CODE.match(from_)
            )
        if from_ == "+15005550001" or not valid:
            raise ApiError(400, 21212, f"Invalid 'From' Phone Number: {from_}")
        if (from_whatsapp is None) != (to_whatsapp is None):
            raise ApiError(
                400, 21910, "Invalid From and To pair. From and To should be of the same channel"
            )
    body = first_value(values, "Body")
    content_sid = first_value(values, "ContentSid")
    if not body and not values.get("MediaUrl") and not content_sid:
        raise ApiError(400, 21602, "Message body is required")
    if body is not None and len(body) > MAX_BODY_CHARS:
        raise ApiError(
            400,
            21617,
            f"The concatenated message body exceeds the {MAX_BODY_CHARS} character limit",
        )
    variables = first_value(values, "ContentVariables")
    if variables is not None:
        try:
            parsed = json.loads(variables)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ApiError(400, 21656, "The ContentVariables Parameter is invalid")
    if to_whatsapp is not None and not content_sid and not session_open(to):
        raise ApiError(
            400,
            63016,
            "Failed to send freeform message because you are outside the allowed window. "
            "If you are using WhatsApp, please use a Message Template.",
        )


# GSM 03.38: the basic character set (ESC excluded) and the extension table (2 septets each).
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")


def is_gsm7(text: str) -> bool:
    """Whether ``text`` can be sent in the GSM-7 alphabet (basic set plus extension table)."""
    return all(char in _GSM7_BASIC or char in _GSM7_EXTENSION for char in text)


def _pack(costs: list[int], single: int, multi: int) -> int:
    """Segments needed for characters of the given costs; none is split across two segments."""
    if sum(costs) <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            segments, used = segments + 1, 0
        used += cost
    return segments


def count_segments(body: str) -> int:
    """How many SMS segments ``body`` takes (PROTOCOL.md §6).

    GSM-7 when every character is in the GSM-7 alphabet (extension characters cost two
    septets): 160 septets in one segment, else 153 per segment. Otherwise UCS-2: 70 UTF-16
    code units in one segment, else 67 per segment; characters beyond the BMP take two. A
    character or escape pair is never split. An empty body is one segment.
    """
    if is_gsm7(body):
        costs = [2 if char in _GSM7_EXTENSION else 1 for char in body]
        return _pack(costs, 160, 153)
    costs = [2 if ord(char) > 0xFFFF else 1 for char in body]
    return _pack(costs, 70, 67)
