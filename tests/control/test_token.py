"""Tests for engine.control.token: stream access tokens carried in a <Parameter>."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.control.token import TOKEN_PARAMETER, StreamTokens
from engine.control.twiml import connect_stream, parse_connect_stream
from engine.errors import CLOSE_POLICY_VIOLATION, ConfigError, TokenError

SECRET = "auth-token-0123456789abcdef"
CALL = "CA" + "0" * 31 + "1"
OTHER_CALL = "CA" + "0" * 31 + "2"
PARAMS = {"tenant": "42", "lang": "en-GB"}
T0 = 1_700_000_000.25


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens(clock: FakeClock) -> StreamTokens:
    return StreamTokens(SECRET, ttl=120.0, clock=clock)


def test_round_trip(tokens: StreamTokens) -> None:
    custom = tokens.parameters_with_token(CALL, PARAMS)
    assert set(custom) == {*PARAMS, TOKEN_PARAMETER}
    assert tokens.verify(custom, CALL) == PARAMS


def test_round_trip_without_parameters(tokens: StreamTokens) -> None:
    token = tokens.issue(CALL)
    assert tokens.verify({TOKEN_PARAMETER: token}, CALL) == {}


def test_bytes_secret_is_the_same_key(clock: FakeClock) -> None:
    token = StreamTokens(SECRET.encode(), clock=clock).issue(CALL, PARAMS)
    assert StreamTokens(SECRET, clock=clock).verify({**PARAMS, TOKEN_PARAMETER: token}, CALL)


def test_format_and_mac_follow_the_documented_construction(tokens: StreamTokens) -> None:
    """Recompute the MAC independently: key = HMAC(secret, context); MAC over canonical JSON."""
    token = tokens.issue(CALL, PARAMS)
    version, expiry, tag, mac = token.split(".")
    assert version == "v1"
    assert int(expiry) == 1_700_000_121  # ceil(T0 + ttl)
    key = hmac.new(SECRET.encode(), b"voice-engine/stream-token/v1", hashlib.sha256).digest()
    signed = json.dumps(
        ["v1", CALL, int(expiry), [["lang", "en-GB"], ["tenant", "42"]]], separators=(",", ":")
    ).encode()
    expected = base64.urlsafe_b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    assert mac == expected.rstrip(b"=").decode()
    # The secret itself is not the MAC key.
    raw = base64.urlsafe_b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest())
    assert mac != raw.rstrip(b"=").decode()
    assert len(tag) == 8
    assert "=" not in token


def test_expired(tokens: StreamTokens, clock: FakeClock) -> None:
    custom = tokens.parameters_with_token(CALL, PARAMS)
    clock.now = T0 + 119
    assert tokens.verify(custom, CALL) == PARAMS
    clock.now = T0 + 121  # expiry = ceil(T0 + 120)
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(custom, CALL)
    clock.now = T0 + 3600
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(custom, CALL)


def test_expiry_boundary(tokens: StreamTokens, clock: FakeClock) -> None:
    custom = tokens.parameters_with_token(CALL)
    expiry = int(custom[TOKEN_PARAMETER].split(".")[1])
    clock.now = expiry - 0.001
    tokens.verify(custom, CALL)
    clock.now = expiry
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(custom, CALL)


def test_wrong_call(tokens: StreamTokens) -> None:
    custom = tokens.parameters_with_token(CALL, PARAMS)
    with pytest.raises(TokenError, match="issued for another call"):
        tokens.verify(custom, OTHER_CALL)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"tenant": "43"}, id="altered"),
        pytest.param({"admin": "1"}, id="added"),
        pytest.param({"tenant": ""}, id="emptied"),
        pytest.param({"Tenant": "42"}, id="added-case-variant"),
    ],
)
def test_altered_or_added_parameter(tokens: StreamTokens, change: dict[str, str]) -> None:
    custom = {**tokens.parameters_with_token(CALL, PARAMS), **change}
    with pytest.raises(TokenError, match="bad stream token signature"):
        tokens.verify(custom, CALL)


def test_removed_parameter(tokens: StreamTokens) -> None:
    custom = tokens.parameters_with_token(CALL, PARAMS)
    del custom["lang"]
    with pytest.raises(TokenError, match="bad stream token signature"):
        tokens.verify(custom, CALL)


def test_renamed_parameter_keeps_no_meaning(tokens: StreamTokens) -> None:
    # {"ab": "c"} and {"a": "bc"} must not share a MAC (the encoding is unambiguous).
    custom = tokens.parameters_with_token(CALL, {"ab": "c"})
    forged = {"a": "bc", TOKEN_PARAMETER: custom[TOKEN_PARAMETER]}
    with pytest.raises(TokenError, match="bad stream token signature"):
        tokens.verify(forged, CALL)


def test_altered_expiry(tokens: StreamTokens) -> None:
    custom = tokens.parameters_with_token(CALL, PARAMS)
    version, expiry, tag, mac = custom[TOKEN_PARAMETER].split(".")
    custom[TOKEN_PARAMETER] = f"{version}.{int(expiry) + 3600}.{tag}.{mac}"
    with pytest.raises(TokenError, match="bad stream token signature"):
        tokens.verify(custom, CALL)


def test_different_secret(clock: FakeClock, tokens: StreamTokens) -> None:
    custom = StreamTokens("another-secret", clock=clock).parameters_with_token(CALL, PARAMS)
    with pytest.raises(TokenError, match="bad stream token signature"):
        tokens.verify(custom, CALL)


def test_missing(tokens: StreamTokens) -> None:
    with pytest.raises(TokenError, match="missing stream token"):
        tokens.verify(PARAMS, CALL)
    with pytest.raises(TokenError, match="missing stream token"):
        tokens.verify({}, CALL)


def _good(tokens: StreamTokens) -> str:
    return tokens.issue(CALL, PARAMS)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: "garbage", id="garbage"),
        pytest.param(lambda t: t[:-1], id="truncated-mac"),
        pytest.param(lambda t: t[: t.rindex(".")], id="no-mac"),
        pytest.param(lambda t: t[:10], id="truncated-expiry"),
        pytest.param(lambda t: t + ".x", id="extra-part"),
        pytest.param(lambda t: t + "A", id="long-mac"),
        pytest.param(lambda t: t.replace(".", "..", 1), id="empty-part"),
        pytest.param(lambda t: "V1" + t[2:], id="version-case"),
        pytest.param(lambda t: t.replace("1700000121", "-170000012"), id="negative-expiry"),
        pytest.param(lambda t: t.replace("1700000121", "17000_0121"), id="underscore-expiry"),
        pytest.param(lambda t: t.replace("1700000121", "١٧٠٠٠٠٠١٢١"), id="arabic-digits"),
        pytest.param(lambda t: t.replace("1700000121", "9" * 13), id="huge-expiry"),
        pytest.param(lambda t: t[:-5] + "+/+/=", id="not-base64url"),
        pytest.param(lambda t: t[:-1] + " ", id="trailing-space"),
        pytest.param(lambda t: " " + t, id="leading-space"),
    ],
)
def test_malformed(tokens: StreamTokens, mangle: Callable[[str], str]) -> None:
    custom = {**PARAMS, TOKEN_PARAMETER: mangle(_good(tokens))}
    with pytest.raises(TokenError, match="malformed stream token"):
        tokens.verify(custom, CALL)


def test_non_canonical_base64_is_a_bad_signature(tokens: StreamTokens) -> None:
    token = _good(tokens)
    # The last character of 43 base64url chars carries 2 spare bits; flipping them keeps the
    # bytes but changes the text. Only the canonical spelling is accepted.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    twin = token[:-1] + alphabet[last ^ 1]
    with pytest.raises(TokenError, match="bad stream token signature"):
        tokens.verify({**PARAMS, TOKEN_PARAMETER: twin}, CALL)


def test_unsupported_version(tokens: StreamTokens) -> None:
    token = "v2" + _good(tokens)[2:]
    with pytest.raises(TokenError, match="unsupported stream token version 'v2'"):
        tokens.verify({**PARAMS, TOKEN_PARAMETER: token}, CALL)


def test_non_string_values_are_malformed(tokens: StreamTokens) -> None:
    custom: dict[str, object] = {**tokens.parameters_with_token(CALL, PARAMS), "tenant": 42}
    with pytest.raises(TokenError, match="malformed custom parameters"):
        tokens.verify(custom, CALL)  # type: ignore[arg-type]
    with pytest.raises(TokenError, match="malformed stream token"):
        tokens.verify({TOKEN_PARAMETER: 7}, CALL)  # type: ignore[dict-item]


def test_token_error_closes_with_policy_violation(tokens: StreamTokens) -> None:
    with pytest.raises(TokenError) as info:
        tokens.verify({}, CALL)
    assert info.value.close_code == CLOSE_POLICY_VIOLATION


def test_issue_refusals(tokens: StreamTokens) -> None:
    with pytest.raises(ValueError, match="call SID"):
        tokens.issue("")
    with pytest.raises(ValueError, match="reserved"):
        tokens.issue(CALL, {TOKEN_PARAMETER: "x"})


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_ttl(ttl: float) -> None:
    with pytest.raises(ConfigError):
        StreamTokens(SECRET, ttl=ttl)


@pytest.mark.parametrize("secret", ["", b""])
def test_empty_secret(secret: str | bytes) -> None:
    with pytest.raises(ConfigError):
        StreamTokens(secret)


def test_parameters_with_token_does_not_mutate(tokens: StreamTokens) -> None:
    params = dict(PARAMS)
    tokens.parameters_with_token(CALL, params)
    assert params == PARAMS


def test_through_twiml(tokens: StreamTokens) -> None:
    """The token survives the TwiML round trip and fits the <Parameter> limit."""
    custom = tokens.parameters_with_token(CALL, PARAMS)
    twiml = connect_stream("wss://engine.example.com/twilio/media", custom)
    parsed = parse_connect_stream(twiml)
    assert tokens.verify(parsed.parameters, CALL) == PARAMS
    assert len(TOKEN_PARAMETER) + len(custom[TOKEN_PARAMETER]) < 100


_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
_params = st.dictionaries(_TEXT.filter(lambda k: k != TOKEN_PARAMETER), _TEXT, max_size=5)


@given(_params, st.text(min_size=1, max_size=40))
def test_property_round_trip(params: dict[str, str], call_sid: str) -> None:
    tokens = StreamTokens(SECRET, clock=FakeClock())
    assert tokens.verify(tokens.parameters_with_token(call_sid, params), call_sid) == params


@given(_params, _TEXT, _TEXT)
def test_property_any_parameter_change_fails(params: dict[str, str], name: str, value: str) -> None:
    tokens = StreamTokens(SECRET, clock=FakeClock())
    custom = tokens.parameters_with_token(CALL, params)
    if name == TOKEN_PARAMETER or params.get(name) == value:
        return
    with pytest.raises(TokenError, match="bad stream token signature"):
        tokens.verify({**custom, name: value}, CALL)
    if params:
        first = next(iter(params))
        smaller = {k: v for k, v in custom.items() if k != first}
        with pytest.raises(TokenError, match="bad stream token signature"):
            tokens.verify(smaller, CALL)
