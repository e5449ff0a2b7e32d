"""Field checks and JSON helpers shared by both sides of the Media Streams protocol.

Private to :mod:`engine.media.protocol` (the server side) and :mod:`engine.testing.twilio_side`
(Twilio's side, for the emulator). Every check raises :class:`~engine.errors.ProtocolError`
with close code 1007 and names the field (e.g. ``start.callSid``).
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any, Final

from engine.errors import CLOSE_INVALID_PAYLOAD, ProtocolError

__all__ = [
    "CHANNELS",
    "MULAW",
    "SAMPLE_RATE",
    "b64text",
    "decode_base64",
    "dumps",
    "event_name",
    "field",
    "int_field",
    "invalid",
    "is_counter",
    "is_sid",
    "object_field",
    "short",
    "str_field",
    "uint_field",
]

MULAW: Final = "audio/x-mulaw"
"""The only media encoding (§1.2): 8 kHz mono μ-law."""
SAMPLE_RATE: Final = 8000
"""The only sample rate, in Hz."""
CHANNELS: Final = 1
"""The only channel count."""

_UINT_TEXT: Final = "a string holding a non-negative decimal integer"
_DIGITS = re.compile(r"[0-9]{1,19}").fullmatch


def is_counter(text: str) -> bool:
    """Whether ``text`` is a counter: 1–19 ASCII digits (so it fits a signed 64-bit integer)."""
    return _DIGITS(text) is not None


def short(value: str, limit: int = 40) -> str:
    """``repr`` of a string, cut down so error messages stay small."""
    if len(value) > limit:
        return repr(value[:limit]) + "…"
    return repr(value)


def _describe(value: object) -> str:
    """Name a decoded JSON value's type (and a short form of its value) for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        text = str(value)
        return f"an integer ({text if len(text) <= 40 else text[:40] + '…'})"
    if isinstance(value, float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"the string {short(value)}"
    if isinstance(value, list):
        return "an array"
    return "an object"


def invalid(path: str, expected: str, value: object) -> ProtocolError:
    """The 1007 error for a field of the wrong type or form."""
    return ProtocolError(
        f"{path}: expected {expected}, got {_describe(value)}", CLOSE_INVALID_PAYLOAD
    )


def field(obj: dict[str, Any], key: str, path: str, expected: str) -> Any:
    """``obj[key]``, or a 1007 error naming the missing field."""
    try:
        return obj[key]
    except KeyError:
        raise ProtocolError(
            f"{path}: missing (expected {expected})", CLOSE_INVALID_PAYLOAD
        ) from None


def str_field(obj: dict[str, Any], key: str, path: str) -> str:
    """A field that must be a JSON string."""
    value = field(obj, key, path, "a string")
    if type(value) is not str:
        raise invalid(path, "a string", value)
    return value


def object_field(obj: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    """A field that must be a JSON object."""
    value = field(obj, key, path, "an object")
    if type(value) is not dict:
        raise invalid(path, "an object", value)
    return value


def uint_field(obj: dict[str, Any], key: str, path: str) -> int:
    """A counter field: a JSON string of 1–19 ASCII digits (so not ``5``, ``"-1"``, ``" 1"``)."""
    value = field(obj, key, path, _UINT_TEXT)
    if type(value) is str and _DIGITS(value) is not None:
        return int(value)
    raise invalid(path, _UINT_TEXT, value)


def int_field(obj: dict[str, Any], key: str, path: str) -> int:
    """A field that must be a JSON number holding an integer (not a boolean, not ``8000.0``)."""
    value = field(obj, key, path, "an integer")
    if type(value) is not int:
        raise invalid(path, "an integer", value)
    return value


def decode_base64(text: str, path: str) -> bytes:
    """Strict base64 decoding, or a 1007 error."""
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise ProtocolError(f"{path}: invalid base64 ({exc})", CLOSE_INVALID_PAYLOAD) from None


def is_sid(value: str) -> bool:
    """Whether ``value`` is non-empty ASCII letters and digits (safe to splice into JSON)."""
    return value.isascii() and value.isalnum()


def event_name(msg: dict[str, Any]) -> str:
    """The message's ``event`` field, which must be a string."""
    return str_field(msg, "event", "event")


def b64text(payload: bytes | bytearray | memoryview) -> str:
    """Base64 of ``payload`` as text, without a trailing newline."""
    return binascii.b2a_base64(payload, newline=False).decode("ascii")


def dumps(obj: dict[str, Any]) -> str:
    """Compact JSON, as Twilio and the server write it."""
    return json.dumps(obj, separators=(",", ":"))
