"""The load generator's HTTP side, sans-IO: the voice webhook, its TwiML, the WebSocket handshake.

Once per call, so clarity wins over speed here:

* :class:`WebhookExchange` is Twilio's signed voice webhook POST (the form fields Twilio sends,
  ``X-Twilio-Signature`` keyed by the Auth Token) as bytes, and reads the answer with :mod:`h11`.
* :func:`read_twiml` follows the answer as Twilio would: the first ``<Connect><Stream>``
  (bidirectional) or ``<Start><Stream>`` (inbound audio only) with its ``<Parameter>`` values,
  or a refusal (``<Reject>``, or ``<Hangup>`` before any stream).
* :func:`handshake_request` and :func:`read_handshake` are the client's WebSocket upgrade,
  signed as Twilio signs it, and the check of the server's ``101`` answer.
"""

from __future__ import annotations

import base64
import hashlib
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TypeAlias
from urllib.parse import urlencode, urljoin, urlsplit

import h11

from engine.control.signature import compute_signature
from engine.testing.load_wire import WireError

__all__ = [
    "Answer",
    "Refusal",
    "StreamAnswer",
    "WebhookExchange",
    "handshake_request",
    "read_handshake",
    "read_twiml",
    "stream_target",
]

MAX_ANSWER_BYTES = 64 * 1024
"""A webhook answer (or handshake head) larger than this is refused."""
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass(frozen=True, slots=True)
class StreamAnswer:
    """TwiML that streams the call: the first ``<Stream>`` Twilio would dial."""

    url: str
    """The absolute ``ws(s)://`` URL (a relative ``url`` resolved against the webhook's)."""
    parameters: dict[str, str] = field(default_factory=dict)
    """The ``<Parameter>`` values, sent as ``start.customParameters``."""
    bidirectional: bool = True
    """``<Connect><Stream>`` (the server may send audio back); ``False`` for ``<Start>``."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """TwiML that ends the call without streaming it: an answer, not a failure."""

    reason: str
    """``reject:<reason>`` for ``<Reject>``, ``hangup`` for ``<Hangup>`` before any stream."""


Answer: TypeAlias = StreamAnswer | Refusal


def read_twiml(twiml: str | bytes, base_url: str) -> Answer:
    """Follow a TwiML document's verbs in order until it streams the call or ends it.

    Raises :class:`WireError` when it is not well-formed TwiML, has a DOCTYPE, a ``<Stream>``
    has no ``url`` or a ``<Parameter>`` no ``name``, ``<Connect>`` holds something other than a
    ``<Stream>``, or the document ends without streaming or refusing the call.
    """
    text = twiml.decode("utf-8", "replace") if isinstance(twiml, bytes) else twiml
    if "<!DOCTYPE" in text:
        raise WireError("TwiML must not have a DOCTYPE")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise WireError(f"TwiML is not well-formed XML: {exc}") from None
    if root.tag != "Response":
        raise WireError(f"TwiML root must be <Response>, not <{root.tag}>")
    for verb in root:
        if verb.tag == "Reject":
            return Refusal(f"reject:{verb.get('reason', 'rejected')}")
        if verb.tag == "Hangup":
            return Refusal("hangup")
        if verb.tag in ("Connect", "Start"):
            stream = verb.find("Stream")
            if stream is None:
                if verb.tag == "Connect":
                    child = next(iter(verb), None)
                    what = "nothing" if child is None else f"<{child.tag}>"
                    raise WireError(f"<Connect> holds {what}, not a <Stream>")
                continue
            return _stream(stream, base_url, bidirectional=verb.tag == "Connect")
    raise WireError("TwiML neither streams nor refuses the call")


def _stream(stream: ET.Element, base_url: str, *, bidirectional: bool) -> StreamAnswer:
    url = stream.get("url")
    if not url:
        raise WireError("<Stream> has no url attribute")
    if "://" not in url:  # relative: against the webhook's URL, in its WebSocket scheme
        url = urljoin(base_url, url)
        url = "ws" + url[4:] if url.startswith("http") else url
    parameters: dict[str, str] = {}
    for parameter in stream.iterfind("Parameter"):
        name = parameter.get("name")
        if not name:
            raise WireError("<Parameter> has no name attribute")
        parameters[name] = parameter.get("value", "")
    return StreamAnswer(url, parameters, bidirectional)


class WebhookExchange:
    """One signed voice webhook POST and the reading of its answer, sans-IO."""

    def __init__(
        self,
        url: str,
        auth_token: str | None,
        *,
        call_sid: str,
        account_sid: str,
        from_number: str = "+15017122661",
        to_number: str = "+15558675310",
    ) -> None:
        self.url = url
        self.form = {
            "AccountSid": account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call_sid,
            "CallStatus": "ringing",
            "Called": to_number,
            "Caller": from_number,
            "Direction": "inbound",
            "From": from_number,
            "To": to_number,
        }
        """The form fields Twilio sends with an inbound call's voice webhook."""
        self.signature = compute_signature(url, self.form, auth_token) if auth_token else None
        self._h11 = h11.Connection(h11.CLIENT)
        self._status = 0
        self._content_type = ""
        self._body: list[bytes] = []
        self._size = 0

    def request(self) -> bytes:
        """The POST, as bytes to write."""
        parts = urlsplit(self.url)
        body = urlencode(self.form).encode()
        headers = [
            ("Host", parts.netloc),
            ("User-Agent", "TwilioProxy/1.1"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
        if self.signature is not None:
            headers.append(("X-Twilio-Signature", self.signature))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return (
            self._h11.send(h11.Request(method="POST", target=target, headers=headers))
            + self._h11.send(h11.Data(data=body))
            + self._h11.send(h11.EndOfMessage())
        )

    def feed(self, data: bytes) -> Answer | None:
        """Take bytes of the answer (``b""`` at end of stream); the answer once complete.

        Raises :class:`WireError` on malformed HTTP, a status other than 200, a content type
        that is not XML, an answer over :data:`MAX_ANSWER_BYTES`, or bad TwiML.
        """
        try:
            self._h11.receive_data(data)
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    if not data:
                        raise WireError("the webhook connection closed before the answer ended")
                    return None
                if isinstance(event, h11.Response):
                    self._status = event.status_code
                    self._content_type = dict(event.headers).get(b"content-type", b"").decode()
                elif isinstance(event, h11.Data):
                    self._size += len(event.data)
                    if self._size > MAX_ANSWER_BYTES:
                        raise WireError("a webhook answer over 64 KiB")
                    self._body.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    return self._answer(b"".join(self._body))
                elif isinstance(event, h11.ConnectionClosed):
                    raise WireError("the webhook connection closed before the answer")
        except h11.RemoteProtocolError as exc:
            raise WireError(f"the webhook answer is not valid HTTP: {exc}") from None

    def _answer(self, body: bytes) -> Answer:
        if self._status != 200:
            text = body[:200].decode("utf-8", "replace").strip()
            raise WireError(f"voice webhook answered HTTP {self._status}: {text}")
        if not self._content_type.startswith(("text/xml", "application/xml")):
            raise WireError(f"voice webhook answered {self._content_type!r}, not TwiML")
        return read_twiml(body, self.url)


def stream_target(url: str) -> tuple[str, int, str]:
    """``(host, port, request target)`` of a ``ws://`` or ``wss://`` URL; :class:`WireError`
    for another."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise WireError(f"the load generator dials ws:// or wss:// streams only, not {url!r}")
    if not parts.hostname:
        raise WireError(f"a stream URL without a host: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        raise WireError(f"a stream URL with a bad port: {url!r}") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, target


def handshake_request(url: str, auth_token: str | None) -> tuple[bytes, bytes]:
    """The WebSocket upgrade request for ``url``, signed as Twilio signs it, and its key."""
    _, _, target = stream_target(url)
    key = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {urlsplit(url).netloc}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
        "User-Agent: Twilio.TmeWs/1.0",
    ]
    if auth_token:
        lines.append(f"X-Twilio-Signature: {compute_signature(url, {}, auth_token)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def read_handshake(head: bytes, key: bytes) -> bytes | None:
    """Check the server's answer to the upgrade; the bytes after it (the first frames).

    ``None`` while the head is incomplete. Raises :class:`WireError` for a refusal (any status
    but 101), a wrong ``Sec-WebSocket-Accept``, a missing upgrade, or a head over 64 KiB.
    """
    end = head.find(b"\r\n\r\n")
    if end < 0:
        if len(head) > MAX_ANSWER_BYTES:
            raise WireError("a handshake answer head over 64 KiB")
        return None
    status_line, *lines = head[:end].decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise WireError(f"the handshake answer is not HTTP: {status_line[:80]!r}")
    if parts[1] != "101":
        raise WireError(f"handshake refused: HTTP {parts[1]}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise WireError(f"a malformed handshake header: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        raise WireError("the handshake answer does not upgrade to websocket")
    expected = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
    if headers.get("sec-websocket-accept") != expected:
        raise WireError("the handshake answer's Sec-WebSocket-Accept is wrong")
    return head[end + 4 :]
