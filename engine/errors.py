"""The engine's error tree: one root, a few branches that say what to send back."""

from __future__ import annotations

__all__ = [
    "CallRejected",
    "ConfigError",
    "ConnectionClosed",
    "EngineError",
    "InvalidInput",
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
    """Root of every error the engine raises on purpose."""


class ConfigError(EngineError):
    """The engine was configured wrongly (missing auth token, unknown pipeline, bad value)."""


class ProtocolError(EngineError):
    """A peer broke the Media Streams protocol; ``close_code`` is the WebSocket close code."""

    def __init__(self, message: str, close_code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.close_code = close_code


class UnknownEventError(ProtocolError):
    """A well-formed message with an ``event`` this engine does not know.

    Twilio may add events; a session counts these and carries on rather than ending the call.
    """

    def __init__(self, event: str) -> None:
        super().__init__(f"unknown event {event!r}", 1003)
        self.event = event


class SignatureError(EngineError):
    """A webhook's ``X-Twilio-Signature`` is missing or wrong: answer HTTP 403."""

    http_status = 403


class TokenError(EngineError):
    """A media stream's access token is missing, forged, expired or bound to another call."""

    close_code = CLOSE_POLICY_VIOLATION


class CallRejected(EngineError):
    """A media stream was refused before any audio flowed; ``close_code`` says why."""

    def __init__(self, message: str, close_code: int = CLOSE_POLICY_VIOLATION) -> None:
        super().__init__(message)
        self.close_code = close_code


class ConnectionClosed(EngineError):
    """The peer's WebSocket closed (or vanished); ``code`` is its close code when it sent one."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class TwilioAPIError(EngineError):
    """Twilio's REST API refused a request: its error ``code``, ``message``, ``more_info`` link
    and HTTP ``status`` (the code is the HTTP status when Twilio's body carries none)."""

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

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Overloaded(EngineError):
    """The server refuses a new call: it is at its call ceiling, its event loop lags, or it is
    shutting down; ``reason`` is ``call-ceiling``, ``loop-lag`` or ``draining``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the voice server cannot take another call now ({reason})")
        self.reason = reason
