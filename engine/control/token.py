"""Short-lived access tokens for Media Streams WebSockets.

Twilio strips query strings from ``<Stream url>``, and the WebSocket handshake's signature only
proves that *some* request came from Twilio. So the TwiML that opens a stream also carries a
signed ``<Parameter name="token">``; it comes back in ``start.customParameters`` and binds the
socket to the call it was issued for and to every other custom parameter, until it expires.

A token reads ``v1.<expiry>.<call tag>.<mac>``:

- ``expiry``: the Unix time (whole seconds) from which it is refused;
- ``call tag``: base64url (no padding) of 6 bytes of an *unkeyed* SHA-256 of the call SID. It
  proves nothing; it only lets :meth:`StreamTokens.verify` tell "issued for another call" apart
  from "forged or altered" in its error;
- ``mac``: base64url (no padding) HMAC-SHA256, under a key derived from the secret, over a JSON
  array of the version, call SID, expiry and the sorted ``[name, value]`` parameters. JSON with
  ASCII escapes is an unambiguous encoding, so no two inputs share a signed string.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Mapping

from engine.errors import ConfigError, TokenError

__all__ = ["TOKEN_PARAMETER", "StreamTokens"]

TOKEN_PARAMETER = "token"
"""The ``<Parameter>`` name (and ``customParameters`` key) that carries the stream token."""

_VERSION = "v1"
_CONTEXT = b"voice-engine/stream-token/v1"
_TAG_BYTES = 6
_EXPIRY_RE = re.compile(r"[1-9][0-9]{0,11}")  # no leading zeros: one spelling per token
_TAG_RE = re.compile(r"[A-Za-z0-9_-]{8}")
_MAC_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def _b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _call_tag(call_sid: str) -> str:
    """The unkeyed call SID hint carried in a token (diagnostics only, not a secret)."""
    digest = hashlib.sha256(_CONTEXT + b"/call\x00" + json.dumps(call_sid).encode("ascii"))
    return _b64url(digest.digest()[:_TAG_BYTES])


def _canonical(call_sid: str, expiry: int, parameters: Mapping[str, str]) -> bytes:
    """The exact bytes a token's MAC covers."""
    pairs = sorted([name, value] for name, value in parameters.items())
    payload = [_VERSION, call_sid, expiry, pairs]
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class StreamTokens:
    """Issues and checks stream tokens under one secret (normally the Twilio Auth Token).

    The MAC key is HMAC-SHA256(secret, ``b"voice-engine/stream-token/v1"``), so the secret itself
    never keys a MAC that travels in TwiML. ``ttl`` is how long a token stays valid, in seconds;
    ``clock`` returns the current Unix time (inject a fake one in tests).
    """

    __slots__ = ("_clock", "_key", "_ttl")

    def __init__(
        self,
        secret: str | bytes,
        *,
        ttl: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Derive the key from ``secret``; raise :class:`ConfigError` if it is empty or ttl ≤ 0."""
        raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if not raw:
            raise ConfigError("stream tokens need a non-empty secret")
        if not ttl > 0 or math.isinf(ttl):
            raise ConfigError(f"stream token ttl must be a positive number of seconds, not {ttl}")
        self._key = hmac.new(raw, _CONTEXT, hashlib.sha256).digest()
        self._ttl = ttl
        self._clock = clock

    @property
    def ttl(self) -> float:
        """How long, in seconds, a freshly issued token stays valid."""
        return self._ttl

    def _mac(self, call_sid: str, expiry: int, parameters: Mapping[str, str]) -> str:
        """The encoded MAC of a token."""
        digest = hmac.new(self._key, _canonical(call_sid, expiry, parameters), hashlib.sha256)
        return _b64url(digest.digest())

    def issue(self, call_sid: str, parameters: Mapping[str, str] | None = None) -> str:
        """Return a token for ``call_sid`` that also pins ``parameters`` (the other Parameters).

        Raises :class:`ValueError` for an empty ``call_sid`` or when ``parameters`` already
        holds :data:`TOKEN_PARAMETER`.
        """
        if not call_sid:
            raise ValueError("a stream token needs a call SID")
        params = dict(parameters or {})
        if TOKEN_PARAMETER in params:
            raise ValueError(f"the parameter name {TOKEN_PARAMETER!r} is reserved for the token")
        expiry = math.ceil(self._clock() + self._ttl)
        mac = self._mac(call_sid, expiry, params)
        return f"{_VERSION}.{expiry}.{_call_tag(call_sid)}.{mac}"

    def parameters_with_token(
        self, call_sid: str, parameters: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Return ``parameters`` plus a token for them under :data:`TOKEN_PARAMETER`."""
        params = dict(parameters or {})
        token = self.issue(call_sid, params)
        params[TOKEN_PARAMETER] = token
        return params

    def verify(self, custom_parameters: Mapping[str, str], call_sid: str) -> dict[str, str]:
        """Check the token in a stream's ``start.customParameters`` and return the other ones.

        The token must be well formed, of a known version, issued for ``call_sid``, signed over
        exactly the other custom parameters (none added, removed or altered) and unexpired.
        Raises :class:`TokenError` saying which check failed.
        """
        token = custom_parameters.get(TOKEN_PARAMETER)
        if token is None:
            raise TokenError(f"missing stream token (customParameters has no {TOKEN_PARAMETER!r})")
        if not isinstance(token, str):
            raise TokenError("malformed stream token: not a string")
        others = {k: v for k, v in custom_parameters.items() if k != TOKEN_PARAMETER}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in others.items()):
            raise TokenError("malformed custom parameters: names and values must be strings")
        parts = token.split(".")
        if parts[0] != _VERSION and len(parts) > 1 and re.fullmatch(r"v[0-9]{1,3}", parts[0]):
            raise TokenError(f"unsupported stream token version {parts[0]!r}")
        if len(parts) != 4 or parts[0] != _VERSION:
            raise TokenError("malformed stream token: expected v1.<expiry>.<call tag>.<mac>")
        _, expiry_text, tag, mac = parts
        if not _EXPIRY_RE.fullmatch(expiry_text):
            raise TokenError("malformed stream token: expiry is not a Unix time")
        if not _TAG_RE.fullmatch(tag) or not _MAC_RE.fullmatch(mac):
            raise TokenError("malformed stream token: bad call tag or MAC encoding")
        if not hmac.compare_digest(tag, _call_tag(call_sid)):
            raise TokenError(f"stream token was issued for another call, not {call_sid!r}")
        expiry = int(expiry_text)
        if not hmac.compare_digest(mac, self._mac(call_sid, expiry, others)):
            raise TokenError(
                "bad stream token signature: forged, signed with another secret, "
                "or a custom parameter was added, removed or altered"
            )
        now = self._clock()
        if now >= expiry:
            raise TokenError(f"stream token expired {now - expiry:.0f}s ago")
        return others
