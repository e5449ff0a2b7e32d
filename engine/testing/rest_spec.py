"""The rules the emulated Twilio REST API enforces: Twilio's OpenAPI description, then its own.

:class:`ApiSpec` reads ``twilio_api_v2010.json`` (Twilio's OpenAPI document, loaded from disk,
never copied into the project) and checks a form-encoded request body against one operation:
only the parameters the operation lists, each at most once unless its type is an array, the
required ones present, enums, integers, booleans, SID patterns and URLs well-formed. It also knows
the properties of each resource schema, so the emulator answers with every one of them.

On top of the spec come Twilio's semantic rules (PROTOCOL.md §4.1, §4.3, §6), which the spec does
not express: :func:`check_create_call` and :func:`check_create_message`, E.164 addresses,
the magic test numbers, and SMS segmentation (:func:`count_segments`). Every failure is an
:class:`ApiError` carrying Twilio's HTTP status, error code and message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

__all__ = [
    "MAX_BODY_CHARS",
    "MAX_TWIML_CHARS",
    "ApiError",
    "ApiSpec",
    "FormValues",
    "Operation",
    "Param",
    "check_create_call",
    "check_create_message",
    "count_segments",
    "error_body",
    "format_number",
    "is_e164",
    "is_gsm7",
]

FormValues: TypeAlias = dict[str, list[str]]
"""A form body as a multi-dict: each parameter name with all its values, in order."""

MAX_TWIML_CHARS = 4000
"""Longest inline ``Twiml`` a call accepts (PROTOCOL.md §4.1)."""
MAX_BODY_CHARS = 1600
"""Longest message ``Body`` (PROTOCOL.md §4.3)."""

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_SHORT_CODE = re.compile(r"^\d{5,6}$")
_INTEGER = re.compile(r"^-?\d+$")
_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

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

# Array parameters whose items the spec types as plain strings, though an enum schema exists.
_ITEM_ENUMS = {"StatusCallbackEvent": "call_enum_event"}
# URL parameters whose malformed values have their own Twilio error codes.
_URL_CODES = {"Url": 21205, "StatusCallback": 21609}


class ApiError(Exception):
    """A request Twilio would refuse: ``status`` (HTTP), ``code`` (Twilio's) and ``message``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"HTTP {status}, Twilio error {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON body Twilio answers with (see :func:`error_body`)."""
        return error_body(self.status, self.code, self.message)


def error_body(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's error JSON: ``{"code", "message", "more_info", "status"}`` (PROTOCOL.md §4.4)."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _invalid(message: str, code: int = 20001) -> ApiError:
    return ApiError(400, code, message)


@dataclass(frozen=True, slots=True)
class Param:
    """One form parameter of an operation, as the spec describes it."""

    name: str
    type: str
    """``string``, ``integer``, ``number``, ``boolean`` or ``array``."""
    enum: tuple[str, ...] | None = None
    """Allowed values (of each item, for an array), if the spec restricts them."""
    format: str | None = None
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the spec: its form parameters and which are required."""

    method: str
    path: str
    operation_id: str
    params: Mapping[str, Param]
    required: frozenset[str]


class ApiSpec:
    """Twilio's OpenAPI document, read for request validation and resource shapes."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._doc = document
        self._schemas: Mapping[str, Any] = document["components"]["schemas"]
        self._operations: dict[tuple[str, str], Operation] = {}

    @staticmethod
    def load(path: Path) -> ApiSpec:
        """Read the spec at ``path`` (parsed once per file and modification time)."""
        resolved = path.resolve()
        return _load(str(resolved), resolved.stat().st_mtime_ns)

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            return self._resolve(self._schemas[ref.rsplit("/", 1)[1]])
        return schema

    def enum(self, schema_name: str) -> tuple[str, ...]:
        """The values of an enum schema such as ``call_enum_status``."""
        return tuple(self._schemas[schema_name]["enum"])

    def resource_properties(self, schema_name: str) -> dict[str, Mapping[str, Any]]:
        """The properties of a resource schema such as ``api.v2010.account.call``, in order."""
        properties = self._schemas[schema_name]["properties"]
        return {name: self._resolve(prop) for name, prop in properties.items()}

    def operation(self, method: str, path: str) -> Operation:
        """The operation at ``path`` (a template such as ``…/Calls/{Sid}.json``) for ``method``.

        Raises :class:`KeyError` when the spec has no such operation.
        """
        key = (method.upper(), path)
        if key not in self._operations:
            self._operations[key] = self._read_operation(method, path)
        return self._operations[key]

    def _read_operation(self, method: str, path: str) -> Operation:
        op = self._doc["paths"][path][method.lower()]
        body = op.get("requestBody", {}).get("content", {})
        form = self._resolve(body.get("application/x-www-form-urlencoded", {}).get("schema", {}))
        params: dict[str, Param] = {}
        for name, raw in form.get("properties", {}).items():
            prop = self._resolve(raw)
            items = self._resolve(prop.get("items", {})) if prop.get("type") == "array" else prop
            enum = items.get("enum")
            if enum is None and name in _ITEM_ENUMS:
                enum = self._schemas[_ITEM_ENUMS[name]]["enum"]
            params[name] = Param(
                name=name,
                type=prop.get("type", "string"),
                enum=tuple(enum) if enum is not None else None,
                format=items.get("format"),
                pattern=items.get("pattern"),
                min_length=items.get("minLength"),
                max_length=items.get("maxLength"),
            )
        return Operation(
            method=method.upper(),
            path=path,
            operation_id=op.get("operationId", f"{method.upper()} {path}"),
            params=params,
            required=frozenset(form.get("required", ())),
        )

    def validate_form(self, operation: Operation, pairs: Sequence[tuple[str, str]]) -> FormValues:
        """Check a form body against ``operation``; return it as a multi-dict.

        Raises :class:`ApiError`: 20001 for an unknown parameter, a single-valued parameter given
        more than once, or a value of the wrong type, enum, pattern or length; 21201 when ``To``
        is missing, 21213 when a call's ``From`` is missing; 21205 / 21609 for a malformed
        ``Url`` / ``StatusCallback``.
        """
        values: FormValues = {}
        for name, value in pairs:
            values.setdefault(name, []).append(value)
        for name, given in values.items():
            param = operation.params.get(name)
            if param is None:
                raise _invalid(
                    f"Invalid parameter: {name!r} is not a parameter of {operation.operation_id}"
                )
            if param.type != "array" and len(given) > 1:
                raise _invalid(
                    f"Invalid parameter: {name!r} was given {len(given)} times; it takes one value"
                )
        for name in sorted(operation.required, key=lambda n: (n != "To", n)):
            if not values.get(name) or not values[name][0]:
                if name == "To":
                    raise ApiError(400, 21201, "No 'To' number is specified")
                if name == "From":
                    raise ApiError(400, 21213, "No 'From' number is specified")
                raise _invalid(f"Missing required parameter {name!r}")
        for name, given in values.items():
            for value in given:
                _check_value(operation.params[name], value)
        return values


@lru_cache(maxsize=4)
def _load(path: str, _mtime_ns: int) -> ApiSpec:
    with open(path, encoding="utf-8") as file:
        return ApiSpec(json.load(file))


def _check_value(param: Param, value: str) -> None:
    """Raise :class:`ApiError` unless ``value`` fits ``param`` (one item, for an array)."""
    name = param.name
    item_type = "string" if param.type == "array" else param.type
    if param.enum is not None:
        allowed = param.enum
        matches = value.upper() in allowed if param.format == "http-method" else value in allowed
        if not matches:
            raise _invalid(
                f"Invalid value {value!r} for parameter {name!r}: "
                f"must be one of {', '.join(allowed)}"
            )
    if item_type == "integer" and not _INTEGER.match(value.strip()):
        raise _invalid(f"Invalid value {value!r} for parameter {name!r}: not an integer")
    if item_type == "number" and not _NUMBER.match(value.strip()):
        raise _invalid(f"Invalid value {value!r} for parameter {name!r}: not a number")
    if item_type == "boolean" and value.lower() not in ("true", "false"):
        raise _invalid(f"Invalid value {value!r} for parameter {name!r}: not true or false")
    if param.min_length is not None and len(value) < param.min_length:
        raise _invalid(f"Invalid value {value!r} for parameter {name!r}: too short")
    if param.max_length is not None and len(value) > param.max_length:
        raise _invalid(f"Invalid value {value!r} for parameter {name!r}: too long")
    if param.pattern is not None and not re.search(param.pattern, value):
        raise _invalid(f"Invalid value {value!r} for parameter {name!r}: bad format")
    if param.format == "uri" and not _is_http_url(value):
        code = _URL_CODES.get(name, 20001)
        raise _invalid(f"{name} is not a valid URL: {value!r}", code)


def _is_http_url(value: str) -> bool:
    """Whether ``value`` is an absolute http(s) URL with a hostname Twilio accepts."""
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(hostname) and "_" not in (hostname or "")


def is_e164(number: str) -> bool:
    """Whether ``number`` is an E.164 phone number: ``+``, then 2–15 digits not starting with 0."""
    return _E164.match(number) is not None


def format_number(number: str) -> str:
    """A number as Twilio's ``*_formatted`` fields show it: ``(415) 867-5309`` in the NANP."""
    if len(number) == 12 and number.startswith("+1") and number[1:].isdigit():
        return f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    return number


def _first(values: FormValues, name: str) -> str | None:
    given = values.get(name)
    return given[0] if given else None


def check_create_call(values: FormValues) -> None:
    """Twilio's rules for ``CreateCall`` beyond the spec (PROTOCOL.md §4.1, §6).

    ``To``: E.164, ``client:`` or ``sip:`` (21211; the magic test numbers give their errors);
    ``From``: E.164 or ``client:`` (21212); one of ``Url``, ``Twiml``, ``ApplicationSid``
    (21205); ``Twiml`` at most 4000 characters (20001).
    """
    to = _first(values, "To") or ""
    from_ = _first(values, "From") or ""
    if to in _MAGIC_CALL_TO:
        code, message = _MAGIC_CALL_TO[to]
        raise ApiError(400, code, message)
    if not (is_e164(to) or to.startswith(("client:", "sip:"))):
        raise ApiError(400, 21211, f"Invalid 'To' Phone Number: {to}")
    if from_ == "+15005550001" or not (is_e164(from_) or from_.startswith("client:")):
        raise ApiError(400, 21212, f"Invalid 'From' Phone Number: {from_}")
    if not any(_first(values, name) for name in ("Url", "Twiml", "ApplicationSid")):
        raise ApiError(400, 21205, "Either a 'Url', 'Twiml' or 'ApplicationSid' is required")
    twiml = _first(values, "Twiml") or ""
    if len(twiml) > MAX_TWIML_CHARS:
        raise _invalid(
            f"Twiml is {len(twiml)} characters long; at most {MAX_TWIML_CHARS} are allowed"
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
    to = _first(values, "To") or ""
    to_whatsapp = _whatsapp_number(to)
    to_number = to_whatsapp if to_whatsapp is not None else to
    if to_number in _MAGIC_MESSAGE_TO:
        code, message = _MAGIC_MESSAGE_TO[to_number]
        raise ApiError(400, code, message)
    if not is_e164(to_number):
        raise ApiError(400, 21211, f"Invalid 'To' Phone Number: {to}")
    from_ = _first(values, "From")
    if not from_ and not _first(values, "MessagingServiceSid"):
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
    body = _first(values, "Body")
    content_sid = _first(values, "ContentSid")
    if not body and not values.get("MediaUrl") and not content_sid:
        raise ApiError(400, 21602, "Message body is required")
    if body is not None and len(body) > MAX_BODY_CHARS:
        raise ApiError(
            400,
            21617,
            f"The concatenated message body exceeds the {MAX_BODY_CHARS} character limit",
        )
    variables = _first(values, "ContentVariables")
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
