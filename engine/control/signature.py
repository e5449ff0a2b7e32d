"""Twilio webhook signatures (``X-Twilio-Signature``), as in PROTOCOL.md §5.

Twilio signs the URL it requested, followed by each form parameter as ``name + value`` in
byte order of the names, with HMAC-SHA1 keyed by the account's Auth Token, base64-encoded.
Twilio is inconsistent about ports (and, for Media Streams handshakes, a trailing slash), so a
request is accepted when any of a few spellings of its URL (:func:`url_candidates`) matches.

This mirrors ``twilio.request_validator.RequestValidator`` (compute, ``add_port``/``remove_port``)
and goes a little further: it drops ``user:pass@`` safely, adds ``:443`` for ``wss``, and tries
the trailing ``/`` Twilio's WSS handshakes sometimes sign.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import TypeAlias
from urllib.parse import parse_qs, urlsplit

from engine.errors import ConfigError, SignatureError

__all__ = [
    "BODY_HASH_PARAMETER",
    "SIGNATURE_HEADER",
    "Params",
    "WebhookAuth",
    "check_json_signature",
    "check_signature",
    "compute_signature",
    "is_valid_signature",
    "url_candidates",
]

SIGNATURE_HEADER = "X-Twilio-Signature"
"""The HTTP header that carries Twilio's signature."""

BODY_HASH_PARAMETER = "bodySHA256"
"""The query parameter Twilio adds to JSON-body webhooks: lowercase hex SHA-256 of the body."""

Params: TypeAlias = Mapping[str, str | Sequence[str]]
"""Form parameters: one value per name, or several (a multi-dict flattened to lists)."""

_WS_SCHEMES = frozenset({"ws", "wss"})


def _values(value: str | Sequence[str]) -> list[str]:
    """The distinct values of one parameter, sorted, as twilio-python appends them."""
    if isinstance(value, str):
        return [value]
    return sorted(set(value))


def compute_signature(url: str, params: Params | None, auth_token: str) -> str:
    """Return the base64 HMAC-SHA1 signature Twilio would send for ``url`` and ``params``.

    The signed string is ``url`` followed, for each parameter name in byte order, by
    ``name + value`` for each of its values (sorted, identical duplicates dropped). The URL is
    used exactly as given; see :func:`url_candidates` for the spellings Twilio may have signed.

    Raises :class:`ConfigError` when ``auth_token`` is empty: an empty key signs nothing.
    """
    if not auth_token:
        raise ConfigError("cannot sign or check Twilio webhooks without an Auth Token")
    parts = [url]
    if params:
        for name in sorted(params):
            parts.extend(name + value for value in _values(params[name]))
    mac = hmac.new(auth_token.encode("utf-8"), "".join(parts).encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _split_authority(url: str) -> tuple[str, str, str] | None:
    """Split ``url`` into (``scheme://``, authority, rest), or ``None`` when it has no authority."""
    scheme_end = url.find("://")
    if scheme_end <= 0:
        return None
    start = scheme_end + 3
    end = len(url)
    for stop in "/?#":
        found = url.find(stop, start)
        if found != -1:
            end = min(end, found)
    return url[:start], url[start:end], url[end:]


def _split_port(host_port: str) -> tuple[str, str | None]:
    """Split ``host[:port]`` (IPv6 literals in brackets) into the host and the port, if any."""
    if host_port.startswith("["):
        close = host_port.find("]")
        if close != -1 and host_port[close + 1 : close + 2] == ":":
            return host_port[: close + 1], host_port[close + 2 :]
        return host_port, None
    host, colon, port = host_port.rpartition(":")
    if colon and port.isdigit():
        return host, port
    return host_port, None


def _strip_userinfo(url: str) -> str:
    """Drop ``user:pass@`` from the URL's authority; Twilio signs the URL without it."""
    split = _split_authority(url)
    if split is None:
        return url
    prefix, authority, rest = split
    return prefix + authority.rpartition("@")[2] + rest


def _with_trailing_slash(url: str) -> str:
    """Return ``url`` with ``/`` appended to its path (before any query), if not there yet."""
    split = _split_authority(url)
    if split is None:
        return url
    prefix, authority, rest = split
    cut = len(rest)
    for stop in "?#":
        found = rest.find(stop)
        if found != -1:
            cut = min(cut, found)
    path, tail = rest[:cut], rest[cut:]
    if path.endswith("/"):
        return url
    return prefix + authority + path + "/" + tail


def url_candidates(url: str) -> list[str]:
    """Return the spellings of ``url`` that Twilio may have signed, most likely first.

    After dropping ``user:pass@``: the URL as given; with the default port added when it has
    none (``:443`` for https; ``:80`` for every other scheme, as twilio-python does, and also
    ``:443`` for wss, where Twilio really connects); with an explicit port removed. For ws/wss,
    each of those again with a trailing ``/`` added to the path (PROTOCOL.md §5, WSS handshake).
    No duplicates; the order is stable.
    """
    url = _strip_userinfo(url)
    candidates = [url]
    split = _split_authority(url)
    if split is not None:
        prefix, authority, rest = split
        scheme = prefix[:-3].lower()
        host, port = _split_port(authority)
        if port is None:
            ports = ["443"] if scheme == "https" else ["80"]
            if scheme == "wss":
                ports.insert(0, "443")
            candidates.extend(f"{prefix}{host}:{p}{rest}" for p in ports)
        else:
            candidates.append(prefix + host + rest)
        if scheme in _WS_SCHEMES:
            candidates.extend([_with_trailing_slash(c) for c in candidates])
    return list(dict.fromkeys(candidates))


def _same(a: str, b: str) -> bool:
    """Compare two strings in constant time (for a given length), whatever characters they hold."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def is_valid_signature(
    url: str, params: Params | None, signature: str | None, auth_token: str
) -> bool:
    """Return whether ``signature`` is Twilio's signature of ``params`` on any spelling of ``url``.

    An empty or missing signature is never valid. Comparisons are constant-time.
    Raises :class:`ConfigError` when ``auth_token`` is empty.
    """
    if not auth_token:
        raise ConfigError("cannot check Twilio webhooks without an Auth Token")
    if not signature:
        return False
    matches = [
        _same(compute_signature(candidate, params, auth_token), signature)
        for candidate in url_candidates(url)
    ]
    return any(matches)


def check_signature(
    url: str, params: Params | None, signature: str | None, auth_token: str
) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is valid for ``url`` and ``params``."""
    if not signature:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    if not is_valid_signature(url, params, signature, auth_token):
        raise SignatureError(
            f"{SIGNATURE_HEADER} does not match {_strip_userinfo(url)!r} and its parameters "
            "(wrong Auth Token, a proxy rewrote the URL, or the request was altered)"
        )


def check_json_signature(url: str, body: bytes, signature: str | None, auth_token: str) -> None:
    """Check a JSON-body webhook: a valid signature over the URL alone, and a matching body hash.

    The URL must carry ``bodySHA256`` equal to the lowercase hex SHA-256 of ``body`` (compared in
    constant time); the signature covers the URL, with that parameter, and no form parameters.
    Raises :class:`SignatureError` on any failure.
    """
    if not signature:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    try:
        query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    except ValueError as exc:  # urlsplit refuses e.g. "[" without "]" in the host
        raise SignatureError(f"JSON webhook URL is not a valid URL ({exc})") from None
    claimed = query.get(BODY_HASH_PARAMETER)
    if not claimed:
        raise SignatureError(f"JSON webhook URL has no {BODY_HASH_PARAMETER} query parameter")
    if len(claimed) != 1:
        raise SignatureError(f"JSON webhook URL has {len(claimed)} {BODY_HASH_PARAMETER} values")
    check_signature(url, None, signature, auth_token)
    if not _same(hashlib.sha256(body).hexdigest(), claimed[0]):
        raise SignatureError(f"JSON webhook body does not match its {BODY_HASH_PARAMETER}")


class WebhookAuth:
    """Checks ``X-Twilio-Signature`` against the Auth Token and any still accepted during a
    rotation; with no token at all (``insecure``) every request passes.
    """

    __slots__ = ("_tokens",)

    def __init__(self, auth_tokens: Sequence[str]) -> None:
        """``auth_tokens``: the current Auth Token first, then rotated-out ones; empty means
        no checks (insecure local use)."""
        self._tokens = tuple(token for token in auth_tokens if token)

    @property
    def insecure(self) -> bool:
        """Whether requests pass unchecked."""
        return not self._tokens

    def check(self, url: str, params: Params | None, signature: str | None) -> None:
        """Raise :class:`SignatureError` unless ``signature`` is valid for ``url`` and
        ``params`` under one of the tokens."""
        if not self._tokens:
            return
        if not signature:
            raise SignatureError(f"missing {SIGNATURE_HEADER} header")
        if not any(is_valid_signature(url, params, signature, t) for t in self._tokens):
            raise SignatureError(
                f"{SIGNATURE_HEADER} does not match {_strip_userinfo(url)!r} and its parameters "
                "(wrong Auth Token, a proxy rewrote the URL, or the request was altered)"
            )
