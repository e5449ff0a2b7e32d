"""Twilio's OpenAPI description, read to check requests and shape resources.

:class:`ApiSpec` reads ``twilio_api_v2010.json`` (Twilio's OpenAPI document; the published file
ships gzipped in ``data/``, see ``data/SOURCE.md``: :data:`BUNDLED_SPEC`) and checks a
form-encoded request body against one operation: only the parameters the operation lists, each
at most once unless its type is an array, the required ones present, enums, integers, booleans,
SID patterns and URLs well-formed. It also knows the properties of each resource schema, so the
emulator answers with every one of them.

Every failure is an :class:`ApiError` carrying Twilio's HTTP status, error code and message;
Twilio's rules beyond the spec are in :mod:`engine.testing.twilio_api.rules`.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

__all__ = [
    "BUNDLED_SPEC",
    "ApiError",
    "ApiSpec",
    "FormValues",
    "Operation",
    "Param",
    "error_body",
    "first_value",
]

BUNDLED_SPEC = Path(__file__).parent / "data" / "twilio_api_v2010.json.gz"
"""Twilio's OpenAPI document as published (gzipped), vendored with its source and licence."""

FormValues: TypeAlias = dict[str, list[str]]
"""A form body as a multi-dict: each parameter name with all its values, in order."""

_INTEGER = re.compile(r"^-?\d+$")
_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

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
    def load(path: Path = BUNDLED_SPEC) -> ApiSpec:
        """Read the spec at ``path``, plain or gzipped JSON (parsed once per file and
        modification time); by default the vendored copy."""
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
    data = Path(path).read_bytes()
    return ApiSpec(json.loads(gzip.decompress(data) if path.endswith(".gz") else data))


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


def first_value(values: FormValues, name: str) -> str | None:
    """The first value of form parameter ``name``, or ``None`` when it was not given."""
    given = values.get(name)
    return given[0] if given else None
