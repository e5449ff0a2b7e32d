"""TwiML for the voice engine: the ``<Connect><Stream>`` reply, and a parser for it.

Built with :mod:`xml.etree.ElementTree`, so attribute values are escaped properly. The rules
enforced here come from PROTOCOL.md §1.1, §1.4 and §2: a stream URL is ``ws``/``wss`` with no
query string, the ``statusCallback`` is absolute, and each ``<Parameter>``'s name and value
together stay under 500 characters.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit, urlunsplit

from engine.errors import ConfigError

__all__ = [
    "MAX_PARAMETER_LENGTH",
    "XML_DECLARATION",
    "ConnectStream",
    "connect_stream",
    "empty_response",
    "parse_connect_stream",
    "reject",
    "say_and_hang_up",
    "stream_url",
]

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
"""The declaration every TwiML document starts with."""

MAX_PARAMETER_LENGTH = 500
"""A ``<Parameter>``'s name and value together must be shorter than this (PROTOCOL.md §1.4)."""

# Characters XML 1.0 cannot carry at all, not even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class ConnectStream:
    """The first ``<Connect><Stream>`` of a TwiML document (see :func:`parse_connect_stream`)."""

    url: str
    """The ``<Stream url>`` Twilio dials."""
    parameters: dict[str, str] = field(default_factory=dict)
    """The ``<Parameter>`` children, which arrive in ``start.customParameters``."""
    name: str | None = None
    """The stream's ``name``, if any."""
    status_callback: str | None = None
    """The stream's ``statusCallback`` URL, if any."""


def _xml_text(what: str, value: str) -> str:
    """Return ``value``, or raise :class:`ConfigError` if XML cannot carry it."""
    bad = _NOT_XML.search(value)
    if bad is not None:
        raise ConfigError(f"{what} holds {bad.group()!r}, which XML cannot carry")
    return value


def _split(what: str, url: str) -> SplitResult:
    """``urlsplit(url)``, or :class:`ConfigError` where it refuses (``[`` without ``]``, a host
    that NFKC normalization changes)."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"{what} is not a valid URL ({exc}): {url!r}") from None


def stream_url(public_url: str, path: str = "/twilio/media") -> str:
    """Return the WebSocket URL for ``path`` under the engine's public ``http(s)`` URL.

    ``https`` becomes ``wss`` and ``http`` becomes ``ws``; host, port and any path prefix are
    kept. Raises :class:`ConfigError` for another scheme, no host, credentials, a query string
    or a fragment (Twilio strips query strings from stream URLs).
    """
    parts = _split("public URL", public_url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"public URL must be http or https, not {public_url!r}")
    if not parts.hostname:
        raise ConfigError(f"public URL has no host: {public_url!r}")
    if "@" in parts.netloc:
        raise ConfigError("public URL must not carry credentials")
    if parts.query or parts.fragment or "?" in public_url or "#" in public_url:
        raise ConfigError(f"public URL must not carry a query string or fragment: {public_url!r}")
    if "?" in path or "#" in path:
        raise ConfigError(f"stream path must not carry a query string or fragment: {path!r}")
    joined = parts.path.rstrip("/")
    if path:
        joined += "/" + path.lstrip("/")
    ws_scheme = "wss" if scheme == "https" else "ws"
    return urlunsplit((ws_scheme, parts.netloc, joined, "", ""))


def _check_stream_url(url: str) -> None:
    """Raise :class:`ConfigError` unless ``url`` is an absolute ws/wss URL without a query."""
    parts = _split("<Stream url>", url)
    if parts.scheme.lower() not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(f"<Stream url> must be an absolute wss:// (or ws://) URL, not {url!r}")
    if "?" in url or "#" in url:
        raise ConfigError(f"<Stream url> must not carry a query string or fragment: {url!r}")
    _xml_text("<Stream url>", url)


def _check_status_callback(url: str) -> None:
    """Raise :class:`ConfigError` unless ``url`` is an absolute http(s) URL."""
    parts = _split("statusCallback", url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"statusCallback must be an absolute http(s) URL, not {url!r}")
    _xml_text("statusCallback", url)


def connect_stream(
    url: str,
    parameters: Mapping[str, str] | None = None,
    *,
    name: str | None = None,
    status_callback: str | None = None,
) -> str:
    """Return TwiML that connects the call to a bidirectional stream at ``url``.

    ``parameters`` become ``<Parameter>`` children, in the mapping's order. Raises
    :class:`ConfigError` for a URL that is not ws/wss or carries a query string, a
    ``statusCallback`` that is not absolute http(s), an empty parameter name, a parameter whose
    name and value reach 500 characters together, or text XML cannot carry.
    """
    _check_stream_url(url)
    if name is not None:
        _xml_text("<Stream name>", name)
    if status_callback is not None:
        _check_status_callback(status_callback)
    response = ET.Element("Response")
    stream = ET.SubElement(ET.SubElement(response, "Connect"), "Stream", url=url)
    if name is not None:
        stream.set("name", name)
    if status_callback is not None:
        stream.set("statusCallback", status_callback)
    for key, value in (parameters or {}).items():
        if not key:
            raise ConfigError("a <Parameter> needs a non-empty name")
        if len(key) + len(value) >= MAX_PARAMETER_LENGTH:
            raise ConfigError(
                f"<Parameter> {key[:40]!r}: name and value together must be under "
                f"{MAX_PARAMETER_LENGTH} characters, not {len(key) + len(value)}"
            )
        _xml_text(f"<Parameter> {key[:40]!r}", key)
        _xml_text(f"<Parameter> {key[:40]!r}", value)
        ET.SubElement(stream, "Parameter", name=key, value=value)
    return XML_DECLARATION + ET.tostring(response, encoding="unicode")


def empty_response() -> str:
    """Return an empty TwiML ``<Response/>``: Twilio does nothing more (no reply SMS, say)."""
    return XML_DECLARATION + ET.tostring(ET.Element("Response"), encoding="unicode")


def reject(reason: str = "busy") -> str:
    """Return TwiML that refuses an incoming call unanswered (no charge): ``<Reject>`` with
    ``reason`` ``busy`` (the caller hears a busy tone) or ``rejected`` (not in service)."""
    if reason not in ("busy", "rejected"):
        raise ConfigError(f"<Reject reason> must be busy or rejected, not {reason!r}")
    response = ET.Element("Response")
    ET.SubElement(response, "Reject", reason=reason)
    return XML_DECLARATION + ET.tostring(response, encoding="unicode")


def say_and_hang_up(text: str) -> str:
    """Return TwiML that speaks ``text`` and hangs up: ends an answered call politely
    (``<Reject>`` only applies to incoming calls that have not been answered)."""
    response = ET.Element("Response")
    ET.SubElement(response, "Say").text = _xml_text("<Say>", text)
    ET.SubElement(response, "Hangup")
    # ElementTree leaves "\r" raw in text, and XML parsers read a raw "\r" as "\n".
    return XML_DECLARATION + ET.tostring(response, encoding="unicode").replace("\r", "&#13;")


def parse_connect_stream(twiml: str) -> ConnectStream:
    """Read the first ``<Connect><Stream>`` of a TwiML document, as Twilio would follow it.

    Raises :class:`ValueError` when the document is not well-formed XML, has a DOCTYPE, is not
    a ``<Response>``, holds no ``<Connect><Stream>``, or the stream or a parameter lacks a
    required attribute.
    """
    if "<!DOCTYPE" in twiml:
        raise ValueError("TwiML must not have a DOCTYPE")
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise ValueError(f"TwiML is not well-formed XML: {exc}") from None
    if root.tag != "Response":
        raise ValueError(f"TwiML root must be <Response>, not <{root.tag}>")
    stream = root.find("Connect/Stream")
    if stream is None:
        raise ValueError("TwiML holds no <Connect><Stream>")
    url = stream.get("url")
    if not url:
        raise ValueError("<Connect><Stream> has no url attribute")
    parameters: dict[str, str] = {}
    for parameter in stream.iterfind("Parameter"):
        key = parameter.get("name")
        if not key:
            raise ValueError("<Parameter> has no name attribute")
        parameters[key] = parameter.get("value", "")
    return ConnectStream(
        url=url,
        parameters=parameters,
        name=stream.get("name"),
        status_callback=stream.get("statusCallback"),
    )
