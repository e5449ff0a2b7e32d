"""The engine's error tree: one root, and on every error the hint that answers it.

Every :class:`EngineError` carries ``close_code`` (the WebSocket close code to end a media
stream with) and ``http_status`` (the HTTP status to answer a request with); a class sets its
defaults, an instance may say more. The one place that answers — the call session closing its
socket, the front door or a webhook answering a request — reads the hint instead of deciding
again::

    EngineError
    ├── ConfigError           the engine was set up wrongly                        (500)
    ├── ProtocolError         a peer broke the Media Streams protocol              (close 1002…)
    │   ├── UnknownEventError a well-formed message with an event we do not know   (1003)
    │   └── MessageTooBig     a message over the size limit                        (1009)
    ├── BadRequest            an HTTP request the front door refuses               (400, 408…)
    ├── SignatureError        a webhook's X-Twilio-Signature is missing or wrong   (403)
    ├── TokenError            a media stream's access token is not valid           (1008)
    ├── CallRejected          a media stream refused before any audio flowed       (1008)
    ├── ConnectionClosed      the peer's WebSocket closed or vanished
    ├── TwilioAPIError        Twilio's REST API refused a request (Twilio's code)
    ├── InvalidInput          an action's input is wrong; nothing was sent          (400)
    └── Overloaded            the server refuses a new call now                    (503)
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "CallRejected",
    "ConfigError",
    "ConnectionClosed",
    "EngineError",
    "InvalidInput",
    "MessageTooBig",
    "Overloaded",
    "ProtocolError",
    "SignatureError",
    "TokenError",
    "TwilioAPIError",
    "UnknownEventError",
]

# WebSocket close codes (RFC 6455 §7.4.1) the engine uses.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011


class EngineError(Exception):
    """Root of every error the engine raises on purpose.

    ``close_code`` and ``http_status`` say how to answer it on a WebSocket and over HTTP
    (``None``: this error has no answer of that kind); they default to the class's.
    """

    close_code: int | None = CLOSE_INTERNAL_ERROR
    http_status: int | None = 500

    def __init__(
        self, message: str = "", *, close_code: int | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        if close_code is not None:
            self.close_code = close_code
        if http_status is not None:
            self.http_status = http_status


class ConfigError(EngineError):
    """The engine was configured wrongly (missing auth token, unknown pipeline, bad value)."""


class ProtocolError(EngineError):
    """A peer broke the Media Streams protocol; ``close_code`` is the WebSocket close code."""

    close_code: int | None = CLOSE_PROTOCOL_ERROR
    http_status = None

    def __init__(self, message: str, close_code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message, close_code=close_code)


class UnknownEventError(ProtocolError):
    """A well-formed message with an ``event`` this engine does not know.

    Twilio may add events; a session counts these and carries on rather than ending the call.
    """

    def __init__(self, event: str) -> None:
        super().__init__(f"unknown event {event!r}", CLOSE_UNSUPPORTED_DATA)
        self.event = event


class MessageTooBig(ProtocolError):
    """A WebSocket message over the size limit (the socket is closed with 1009)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"message over {limit} bytes", CLOSE_MESSAGE_TOO_BIG)


class BadRequest(EngineError):
    """An HTTP request the front door refuses (malformed, too large, too slow)."""

    close_code = None
    http_status: int | None = 400

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message, http_status=http_status)


class SignatureError(EngineError):
    """A webhook's ``X-Twilio-Signature`` is missing or wrong: answer HTTP 403."""

    close_code = CLOSE_POLICY_VIOLATION
    http_status = 403


class TokenError(EngineError):
    """A media stream's access token is missing, forged, expired or bound to another call."""

    close_code = CLOSE_POLICY_VIOLATION
    http_status = 403


class CallRejected(EngineError):
    """A media stream was refused before any audio flowed; ``close_code`` says why."""

    close_code = CLOSE_POLICY_VIOLATION
    http_status = 403

    def __init__(self, message: str, close_code: int = CLOSE_POLICY_VIOLATION) -> None:
        super().__init__(message, close_code=close_code)


class ConnectionClosed(EngineError):
    """The peer's WebSocket closed (or vanished); ``code`` is its close code when it sent one.

    Nothing is left to answer: ``close_code`` and ``http_status`` are ``None``.
    """

    close_code = None
    http_status = None

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class TwilioAPIError(EngineError):
    """Twilio's REST API refused a request: its error ``code``, ``message``, ``more_info`` link
    and HTTP ``status`` (the code is the HTTP status when Twilio's body carries none)."""

    close_code = None
    http_status = 502

    def __init__(
        self,
        code: int,
        message: str,
        *,
        status: int,
        more_info: str | None = None,
        details: object = None,
    ) -> None:
        super().__init__(f"Twilio error {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.more_info = more_info
        self.details = details


class InvalidInput(EngineError):
    """An action's input is wrong before any request is made; ``field`` names the culprit."""

    close_code = None
    http_status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Overloaded(EngineError):
    """The server refuses a new call: it is at its call ceiling, its event loop lags, or it is
    shutting down; ``reason`` is ``call-ceiling``, ``loop-lag`` or ``draining``."""

    close_code = CLOSE_GOING_AWAY
    http_status = 503

    def __init__(self, reason: str) -> None:
        super().__init__(f"the voice server cannot take another call now ({reason})")
        self.reason = reason
