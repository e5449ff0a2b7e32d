"""The component's parameters checked as its documentation describes them (sans-IO).

One set of checks for every way in — ``voice-engine run`` and the task entry
(:mod:`engine.control.tasks`), the CLI commands and the keyword functions
(:func:`~engine.control.messages.send_sms`, :func:`~engine.control.messages.send_whatsapp`,
:func:`~engine.control.calls.make_call`). Each check takes the value as given (any type, since
it may come from JSON) and the documented parameter name, and returns the value to send or
raises :class:`~engine.errors.InvalidInput` naming that parameter — before any request is made.
A missing value is ``None`` or ``""`` (the documentation's examples leave unused fields empty).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import phonenumbers

from engine.errors import InvalidInput

__all__ = [
    "MAX_BODY",
    "boolean",
    "content_sid",
    "content_variables",
    "e164",
    "form_params",
    "http_method",
    "json_object",
    "max_duration",
    "message_body",
    "pipeline_name",
    "rest_path",
    "ring_timeout",
    "sms_params",
    "sms_recipient",
    "sms_sender",
    "text",
    "whatsapp_address",
    "whatsapp_content",
    "whatsapp_params",
]

MAX_BODY = 1600
"""Longest message ``Body`` Twilio takes."""
MAX_DURATION_MINUTES = 24 * 60
"""Longest ``maxDuration``: Twilio ends any call at 24 hours."""
WHATSAPP = "whatsapp:"
"""The WhatsApp channel's address prefix."""
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
"""The custom action's methods."""

_ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_SHORT_CODE = re.compile(r"^[0-9]{3,8}$")
_CHANNEL_ADDRESS = re.compile(r"^([a-z][a-z0-9-]*):(\S+)$")
_CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")
_PIPELINE = re.compile(r"^(?:[A-Za-z0-9][\w.-]*|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$")


def _kind(value: object) -> str:
    """``value``'s JSON type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence):
        return "an array"
    return type(value).__name__


def _missing(value: object) -> bool:
    return value is None or value == ""


def text(value: object, field: str) -> str:
    """A required, non-empty string."""
    if _missing(value):
        raise InvalidInput(field, "is required")
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, not {_kind(value)}")
    return value


def boolean(value: object, field: str) -> bool:
    """A required boolean (``true`` or ``false``, not a string)."""
    if value is None:
        raise InvalidInput(field, "is required (true or false)")
    if not isinstance(value, bool):
        raise InvalidInput(field, f"must be true or false, not {_kind(value)}")
    return value


def e164(value: object, field: str) -> str:
    """``value`` as a valid E.164 number (surrounding spaces dropped), or :class:`InvalidInput`
    naming ``field``."""
    number = text(value, field).strip()
    if not number.startswith("+"):
        raise InvalidInput(field, f"{value!r} is not an E.164 number (expected +<country><number>)")
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidInput(field, f"{value!r} is not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidInput(field, f"{value!r} is not a valid phone number")
    formatted = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if formatted != number:
        raise InvalidInput(field, f"{value!r} is not in E.164 form (did you mean {formatted}?)")
    return formatted


def whatsapp_address(value: object, field: str) -> str:
    """``whatsapp:+E164``; the prefix is added when missing."""
    address = text(value, field).strip()
    return WHATSAPP + e164(address.removeprefix(WHATSAPP), field)


def _channel_address(address: str, field: str) -> str | None:
    """A channel address (``whatsapp:+E164``, ``messenger:…``, ``sim:…``) checked, or ``None``
    when ``address`` is not one."""
    match = _CHANNEL_ADDRESS.match(address)
    if match is None:
        return None
    if match.group(1) == "whatsapp":
        return whatsapp_address(address, field)
    return address


def sms_sender(value: object, field: str = "From") -> str:
    """sendSMS ``From``: an E.164 number, an alphanumeric sender ID (1–11 letters, digits and
    spaces, at least one letter), a short code (3–8 digits) or a channel address
    (``whatsapp:+15554449999``)."""
    sender = text(value, field).strip()
    if sender.startswith("+"):
        return e164(sender, field)
    channel = _channel_address(sender, field)
    if channel is not None:
        return channel
    if _SHORT_CODE.match(sender) or _ALPHANUMERIC_SENDER.match(sender):
        return sender
    raise InvalidInput(
        field,
        f"{value!r} is not an E.164 number (+<country><number>), an alphanumeric sender ID, "
        "a short code or a channel address (whatsapp:+…)",
    )


def sms_recipient(value: object, field: str = "To") -> str:
    """sendSMS ``To``: an E.164 number, or a channel address (``whatsapp:+E164``…)."""
    recipient = text(value, field).strip()
    channel = _channel_address(recipient, field)
    return channel if channel is not None else e164(recipient, field)


def message_body(value: object, field: str = "Body") -> str:
    """A required message text of at most 1600 characters."""
    body = text(value, field)
    if len(body) > MAX_BODY:
        raise InvalidInput(field, f"is {len(body)} characters; Twilio takes at most {MAX_BODY}")
    return body


def content_sid(value: object, field: str = "ContentSid") -> str:
    """A Content template SID, ``HX`` + 32 hex digits."""
    sid = text(value, field).strip()
    if not _CONTENT_SID.match(sid):
        raise InvalidInput(field, f"{value!r} is not a Content SID (HX + 32 hex digits)")
    return sid


def content_variables(value: object, field: str = "ContentVariables") -> str | None:
    """An object of template variables (``{"1": "Ana"}``) as the JSON string Twilio takes;
    ``None`` when absent or empty. Values are strings or numbers."""
    if value is None or (isinstance(value, Mapping) and not value):
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(field, f"must be an object, not {_kind(value)}")
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(field, f"key {key!r} must be a non-empty string")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise InvalidInput(f"{field}.{key}", f"must be a string or a number, not {_kind(item)}")
    return json.dumps(dict(value), ensure_ascii=False)


def whatsapp_content(
    use_template: object, body: object, sid: object, variables: object
) -> dict[str, str]:
    """sendWhatsAppMessage's content fields: with ``useTemplate`` true, ``ContentSid`` (and
    ``ContentVariables``, if any) and no ``Body``; with it false, ``Body`` and neither of the
    others. A field that would not be sent is refused rather than dropped."""
    if boolean(use_template, "useTemplate"):
        fields = {"ContentSid": content_sid(sid)}
        encoded = content_variables(variables)
        if encoded is not None:
            fields["ContentVariables"] = encoded
        if not _missing(body):
            raise InvalidInput("Body", "a template message (useTemplate true) takes no Body")
        return fields
    if not _missing(sid):
        raise InvalidInput("ContentSid", "applies only to a template: set useTemplate true")
    if content_variables(variables) is not None:
        raise InvalidInput(
            "ContentVariables", "apply only to a template: set useTemplate true with a ContentSid"
        )
    return {"Body": message_body(body)}


def sms_params(*, to: object, from_: object, body: object) -> dict[str, str]:
    """sendSMS's ``Messages.json`` fields, checked in the documented order (To, From, Body)."""
    return {"To": sms_recipient(to), "From": sms_sender(from_), "Body": message_body(body)}


def whatsapp_params(
    *,
    to: object,
    from_: object,
    use_template: object,
    body: object = None,
    content_sid: object = None,
    content_variables: object = None,
) -> dict[str, str]:
    """sendWhatsAppMessage's ``Messages.json`` fields, checked: both addresses ``whatsapp:``
    (added when missing), then the content (see :func:`whatsapp_content`)."""
    params = {"To": whatsapp_address(to, "To"), "From": whatsapp_address(from_, "From")}
    params.update(whatsapp_content(use_template, body, content_sid, content_variables))
    return params


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(field, f"must be a number, not {_kind(value)}")
    if not math.isfinite(value):
        raise InvalidInput(field, "must be a finite number")
    return float(value)


def ring_timeout(value: object, field: str = "timeout") -> int | None:
    """makeCall ``timeout``: whole seconds to ring, 1–600 (``None``: Twilio's 60)."""
    if value is None:
        return None
    seconds = _number(value, field)
    if not seconds.is_integer():
        raise InvalidInput(field, f"must be a whole number of seconds, not {value!r}")
    if not 1 <= seconds <= 600:
        raise InvalidInput(field, f"ring timeout must be 1–600 seconds, not {value!r}")
    return int(seconds)


def max_duration(value: object, field: str = "maxDuration") -> float | None:
    """makeCall ``maxDuration``: minutes to wait for the call to end (fractions allowed), more
    than 0 and at most 1440 (``None``: no limit)."""
    if value is None:
        return None
    minutes = _number(value, field)
    if not 0 < minutes <= MAX_DURATION_MINUTES:
        raise InvalidInput(field, f"must be more than 0 and at most 1440 minutes, not {value!r}")
    return minutes


def pipeline_name(value: object, field: str = "subWorkflow") -> str:
    """A pipeline: a bundled name (``turn-echo``) or ``package.module:factory``. Whether it
    exists is for the loader to say."""
    name = text(value, field).strip()
    if len(name) > 200 or not _PIPELINE.match(name):
        raise InvalidInput(
            field, f"{value!r} is not a pipeline name (e.g. turn-echo) or module:factory"
        )
    return name


def http_method(value: object, field: str = "method") -> str:
    """The custom action's HTTP method: GET, POST, PUT, PATCH or DELETE (any case)."""
    method = text(value, field).strip().upper()
    if method not in HTTP_METHODS:
        raise InvalidInput(field, f"{value!r} is not one of {', '.join(HTTP_METHODS)}")
    return method


def rest_path(value: object, field: str = "path") -> str:
    """A path on Twilio's REST API: relative to the account (``Messages.json``) or absolute
    (``/2010-04-01/Accounts.json``). Never a URL or ``//host``: the connection's credentials
    go to the API's own host only."""
    path = text(value, field).strip()
    if "\\" in path or any(ord(char) < 0x21 or ord(char) == 0x7F for char in path):
        raise InvalidInput(field, f"{value!r}: spaces, control characters and \\ are not allowed")
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or path.startswith("//"):
        raise InvalidInput(field, f"{value!r} is not a path: give the part after the host")
    return path


def form_params(value: object, field: str = "params") -> dict[str, str | list[str]]:
    """Form or query fields from an object: strings, numbers and booleans (``true``/``false``),
    or arrays of them (a repeated field)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(field, f"must be an object, not {_kind(value)}")
    fields: dict[str, str | list[str]] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(field, f"key {key!r} must be a non-empty string")
        if isinstance(item, Sequence) and not isinstance(item, str):
            fields[key] = [_form_value(element, f"{field}.{key}") for element in item]
        else:
            fields[key] = _form_value(item, f"{field}.{key}")
    return fields


def _form_value(value: object, field: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise InvalidInput(field, f"must be a string, number or boolean, not {_kind(value)}")


def json_object(value: object, field: str = "params") -> dict[str, Any]:
    """A JSON object body (any JSON values)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(field, f"must be an object, not {_kind(value)}")
    return dict(value)
