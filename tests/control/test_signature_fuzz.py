"""Property-based fuzzing of engine.control.signature against twilio-python's RequestValidator.

For arbitrary URLs (not only well-formed ones) and form parameters, our signature is the official
library's, it validates, and any change to a value, the parameters, the URL or the signature is
rejected. Garbage signatures and URLs never raise anything but the defined errors.
"""

from __future__ import annotations

import hashlib
import string

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from engine.control.signature import (
    BODY_HASH_PARAMETER,
    check_json_signature,
    check_signature,
    compute_signature,
    is_valid_signature,
    url_candidates,
)
from engine.errors import ConfigError, SignatureError

pytestmark = pytest.mark.fuzz

TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
"""Anything an HTTP request can carry once decoded: any text but lone surrogates."""
TOKENS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
AUTH_TOKENS = st.text("0123456789abcdef", min_size=32, max_size=32)
"""Real Auth Tokens: 32 hex digits. (HMAC pads short keys with zero bytes, so for arbitrary text
``"k"`` and ``"k\\x00"`` are the same key; real tokens never differ that way.)"""
URLS = st.one_of(
    TEXT,
    st.builds(
        lambda scheme, userinfo, host, port, rest: scheme + userinfo + host + port + rest,
        st.sampled_from(["https://", "http://", "wss://", "ws://", "HTTPS://", "ftp://", "://"]),
        st.sampled_from(["", "user:pass@", "@", "a@b@"]),
        st.sampled_from(["example.com", "[::1]", "[::1", "h", "", "é.example"]) | TEXT,
        st.sampled_from(["", ":443", ":80", ":8080", ":", ":x", ":99999"]),
        st.sampled_from(["", "/", "/voice", "/a?b=1&c=2", "?x", "#f", "/p/?q#f"]) | TEXT,
    ),
)
PARAMS = st.dictionaries(TEXT, TEXT, max_size=6)
MULTI_PARAMS = st.dictionaries(TEXT, st.lists(TEXT, min_size=1, max_size=3), max_size=4)
SIGNATURES = st.one_of(
    TEXT,
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),  # header bytes as decoded
    st.text(string.ascii_letters + string.digits + "+/=", min_size=28, max_size=28),
)


def _as_signed(url: str) -> str:
    """The URL Twilio signs for ``url``: without ``user:pass@`` (HTTP basic auth credentials)."""
    scheme_end = url.find("://")
    if scheme_end <= 0:
        return url
    start = scheme_end + 3
    end = min([i for i in (url.find(c, start) for c in "/?#") if i != -1] or [len(url)])
    return url[:start] + url[start:end].rpartition("@")[2] + url[end:]


@given(url=URLS, params=PARAMS, token=TOKENS)
@example(url="https://user:pass@h.example/voice", params={}, token="t")
def test_signature_equals_twilio_python_and_validates(
    url: str, params: dict[str, str], token: str
) -> None:
    theirs = RequestValidator(token).compute_signature(url, params)
    assert compute_signature(url, params, token) == theirs
    signed = RequestValidator(token).compute_signature(_as_signed(url), params)
    assert is_valid_signature(url, params, signed, token)
    check_signature(url, params, signed, token)
    if _as_signed(url) != url:  # credentials are never part of what Twilio signs
        assert not is_valid_signature(url, params, theirs, token)


@given(url=URLS, params=MULTI_PARAMS, token=TOKENS)
def test_multi_valued_signature_equals_twilio_python(
    url: str, params: dict[str, list[str]], token: str
) -> None:
    form = MultiDict([(name, value) for name, values in params.items() for value in values])
    theirs = RequestValidator(token).compute_signature(url, form)
    assert compute_signature(url, params, token) == theirs
    signed = RequestValidator(token).compute_signature(_as_signed(url), form)
    assert is_valid_signature(url, {n: form.getlist(n) for n in form}, signed, token)


@given(url=URLS, params=PARAMS, token=AUTH_TOKENS, data=st.data())
def test_any_change_is_rejected(
    url: str, params: dict[str, str], token: str, data: st.DataObject
) -> None:
    signature = compute_signature(url, params, token)
    change = data.draw(
        st.sampled_from(["value", "add", "remove", "url", "signature", "token"]), label="change"
    )
    changed_url, changed_params, changed_signature, changed_token = url, params, signature, token
    if change == "value":
        assume(params)
        name = data.draw(st.sampled_from(sorted(params)), label="name")
        new = data.draw(TEXT.filter(lambda v: v != params[name]), label="value")
        changed_params = {**params, name: new}
    elif change == "add":
        name = data.draw(TEXT.filter(lambda n: n not in params), label="name")
        value = data.draw(TEXT, label="value")
        assume(name + value)  # an empty name and value add nothing to the signed string
        changed_params = {**params, name: value}
    elif change == "remove":
        assume(params)
        name = data.draw(st.sampled_from(sorted(params)), label="name")
        assume(name + params[name])
        changed_params = {n: v for n, v in params.items() if n != name}
    elif change == "url":
        position = data.draw(st.integers(0, len(url)), label="position")
        inserted = data.draw(TEXT.filter(bool), label="inserted")
        changed_url = url[:position] + inserted + url[position:]
        # Spellings of one URL that Twilio may sign (default port, userinfo, a ws trailing
        # slash) are accepted by design; anything else is not.
        assume(url not in url_candidates(changed_url))
    elif change == "signature":
        changed_signature = data.draw(SIGNATURES.filter(lambda s: s != signature), label="sig")
    else:
        changed_token = data.draw(AUTH_TOKENS.filter(lambda t: t != token), label="token")
    # Single values in a fixed name order: a changed value, or a pair added or removed, always
    # changes the signed string (unlike a renamed parameter: {"ab": "c"} signs as {"a": "bc"}).
    assert not is_valid_signature(changed_url, changed_params, changed_signature, changed_token)
    with pytest.raises(SignatureError):
        check_signature(changed_url, changed_params, changed_signature, changed_token)


@given(url=URLS, params=PARAMS | st.none(), signature=SIGNATURES | st.none(), token=TOKENS)
def test_garbage_never_raises_but_the_defined_errors(
    url: str, params: dict[str, str] | None, signature: str | None, token: str
) -> None:
    valid = is_valid_signature(url, params, signature, token)
    assert valid is (
        bool(signature)
        and signature
        in {compute_signature(candidate, params, token) for candidate in url_candidates(url)}
    )
    try:
        check_signature(url, params, signature, token)
    except SignatureError:
        assert not valid
    else:
        assert valid
    with pytest.raises(ConfigError):
        is_valid_signature(url, params, signature or "x", "")


@given(url=URLS, token=AUTH_TOKENS)
def test_url_candidates_of_anything(url: str, token: str) -> None:
    candidates = url_candidates(url)
    assert candidates[0] == _as_signed(url)
    assert len(set(candidates)) == len(candidates)
    for candidate in candidates:  # a signature over any spelling validates
        assert is_valid_signature(url, None, compute_signature(candidate, None, token), token)


@given(url=URLS, body=st.binary(max_size=100), signature=SIGNATURES | st.none(), token=TOKENS)
@example(url="http://[", body=b"", signature="x", token="t").via(
    "fuzzing: urlsplit's ValueError escaped"
)
def test_json_signature_garbage_raises_only_signature_error(
    url: str, body: bytes, signature: str | None, token: str
) -> None:
    try:
        check_json_signature(url, body, signature, token)
    except SignatureError as exc:
        assert str(exc)
        return
    # Accepted: the URL carries the body's hash and the signature is right.
    assert f"{BODY_HASH_PARAMETER}={hashlib.sha256(body).hexdigest()}" in url
    assert is_valid_signature(url, None, signature, token)


@given(
    base=st.sampled_from(["https://h.example/hook", "http://h:8080/j?x=1", "wss://h/m"]),
    body=st.binary(max_size=200),
    other=st.binary(max_size=200),
    token=AUTH_TOKENS,
)
def test_json_signature_round_trip(base: str, body: bytes, other: bytes, token: str) -> None:
    url = f"{base}{'&' if '?' in base else '?'}{BODY_HASH_PARAMETER}="
    url += hashlib.sha256(body).hexdigest()
    signature = RequestValidator(token).compute_signature(url, {})
    check_json_signature(url, body, signature, token)
    if other != body:
        with pytest.raises(SignatureError):
            check_json_signature(url, other, signature, token)
