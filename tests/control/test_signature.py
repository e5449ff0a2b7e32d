"""Tests for engine.control.signature: PROTOCOL.md §5 vectors and twilio-python as a peer."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from engine.control.signature import (
    check_json_signature,
    check_signature,
    compute_signature,
    is_valid_signature,
    url_candidates,
)
from engine.errors import ConfigError, SignatureError

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
DOCS_PARAMS = {**PARAMS, "From": "+14158675310", "Caller": "+14158675310"}
BODY = b'{"property": "value", "boolean": true}'
BODY_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
JSON_URL = f"{URL}&bodySHA256={BODY_HASH}"

# ---------------------------------------------------------------------------------------------
# PROTOCOL.md §5 test vectors
# ---------------------------------------------------------------------------------------------

VECTORS = [
    pytest.param(URL, PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", id="https"),
    pytest.param(
        "https://mycompany.com:443/myapp.php?foo=1&bar=2",
        PARAMS,
        "kvajT1Ptam85bY51eRf/AJRuM3w=",
        id="https-443",
    ),
    pytest.param(
        "http://mycompany.com:80/myapp.php?foo=1&bar=2",
        PARAMS,
        "0ZXoZLH/DfblKGATFgpif+LLRf4=",
        id="http-80",
    ),
    pytest.param(
        "https://example.com/myapp.php?foo=1&bar=2",
        DOCS_PARAMS,
        "L/OH5YylLD5NRKLltdqwSvS0BnU=",
        id="docs-example",
    ),
    pytest.param(JSON_URL, None, "a9nBmqA0ju/hNViExpshrM61xv4=", id="bodySHA256"),
]


@pytest.mark.parametrize(("url", "params", "expected"), VECTORS)
def test_vectors_compute(url: str, params: dict[str, str] | None, expected: str) -> None:
    assert compute_signature(url, params, TOKEN) == expected


@pytest.mark.parametrize(("url", "params", "expected"), VECTORS)
def test_vectors_validate(url: str, params: dict[str, str] | None, expected: str) -> None:
    assert is_valid_signature(url, params, expected, TOKEN)
    check_signature(url, params, expected, TOKEN)


def test_vector_port_variants_cross_validate() -> None:
    # Twilio drops the port for voice over https, keeps it elsewhere: either spelling validates.
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert is_valid_signature(URL, PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w=", TOKEN)
    assert is_valid_signature(with_port, PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", TOKEN)
    http = "http://mycompany.com/myapp.php?foo=1&bar=2"
    assert is_valid_signature(http, PARAMS, "0ZXoZLH/DfblKGATFgpif+LLRf4=", TOKEN)


def test_json_vector() -> None:
    assert hashlib.sha256(BODY).hexdigest() == BODY_HASH
    check_json_signature(JSON_URL, BODY, "a9nBmqA0ju/hNViExpshrM61xv4=", TOKEN)
    # The same request, checked by twilio-python (a str body means JSON to it).
    assert RequestValidator(TOKEN).validate(JSON_URL, BODY.decode(), "a9nBmqA0ju/hNViExpshrM61xv4=")


# ---------------------------------------------------------------------------------------------
# Negatives
# ---------------------------------------------------------------------------------------------

GOOD = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
MIXED_TOKEN = "aBcDeF0123456789aBcDeF0123456789"


@pytest.mark.parametrize(
    ("url", "params", "signature", "token"),
    [
        pytest.param(URL, {**PARAMS, "Digits": "1235"}, GOOD, TOKEN, id="tampered-param"),
        pytest.param(URL, {**PARAMS, "Extra": ""}, GOOD, TOKEN, id="extra-empty-param"),
        pytest.param(URL, {**PARAMS, "Extra": "1"}, GOOD, TOKEN, id="extra-param"),
        pytest.param(
            URL, {k: v for k, v in PARAMS.items() if k != "To"}, GOOD, TOKEN, id="missing-param"
        ),
        pytest.param(URL, {"callsid": "CA1234567890ABCDE"}, GOOD, TOKEN, id="renamed-param"),
        pytest.param(URL, PARAMS, GOOD, "12346", id="wrong-token"),
        pytest.param(URL, PARAMS, GOOD, TOKEN + " ", id="token-with-space"),
        pytest.param(URL, PARAMS, None, TOKEN, id="missing-header"),
        pytest.param(URL, PARAMS, "", TOKEN, id="empty-header"),
        pytest.param(URL, PARAMS, GOOD.lower(), TOKEN, id="signature-case"),
        pytest.param(URL, PARAMS, GOOD[:-1], TOKEN, id="truncated-signature"),
        pytest.param(URL, PARAMS, GOOD + "=", TOKEN, id="padded-signature"),
        pytest.param(URL, PARAMS, "é" * 28, TOKEN, id="non-ascii-signature"),
        pytest.param(URL.replace("myapp", "other"), PARAMS, GOOD, TOKEN, id="different-path"),
        pytest.param(URL.replace("foo=1", "foo=2"), PARAMS, GOOD, TOKEN, id="different-query"),
        pytest.param(URL.replace("?foo=1&bar=2", ""), PARAMS, GOOD, TOKEN, id="no-query"),
        pytest.param(URL.replace("myapp.php", "myapp.php/"), PARAMS, GOOD, TOKEN, id="https-slash"),
        pytest.param(URL.replace("mycompany", "evil"), PARAMS, GOOD, TOKEN, id="different-host"),
        pytest.param(URL.replace(".com/", ".com:8443/"), PARAMS, GOOD[::-1], TOKEN, id="junk"),
        pytest.param(URL.replace("https", "http"), PARAMS, GOOD, TOKEN, id="different-scheme"),
    ],
)
def test_negatives(url: str, params: dict[str, str], signature: str | None, token: str) -> None:
    assert not is_valid_signature(url, params, signature, token)
    with pytest.raises(SignatureError):
        check_signature(url, params, signature, token)


def test_token_case_matters() -> None:
    signature = compute_signature(URL, PARAMS, MIXED_TOKEN)
    assert is_valid_signature(URL, PARAMS, signature, MIXED_TOKEN)
    assert not is_valid_signature(URL, PARAMS, signature, MIXED_TOKEN.lower())
    assert not is_valid_signature(URL, PARAMS, signature, MIXED_TOKEN.upper())


def test_check_signature_messages() -> None:
    with pytest.raises(SignatureError, match="missing X-Twilio-Signature"):
        check_signature(URL, PARAMS, None, TOKEN)
    with pytest.raises(SignatureError, match="does not match") as info:
        check_signature("https://user:secret@mycompany.com/x", PARAMS, GOOD, TOKEN)
    assert "secret" not in str(info.value)
    assert info.value.http_status == 403


def test_empty_auth_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        compute_signature(URL, PARAMS, "")
    with pytest.raises(ConfigError):
        is_valid_signature(URL, PARAMS, GOOD, "")


def test_params_none_and_empty_are_the_url_alone() -> None:
    expected = compute_signature(URL, None, TOKEN)
    assert compute_signature(URL, {}, TOKEN) == expected
    assert expected == RequestValidator(TOKEN).compute_signature(URL, {})


def test_names_sorted_bytewise_uppercase_first() -> None:
    # "B" < "a" in byte order; a case-insensitive sort would give a different signature.
    params = {"a": "1", "B": "2"}
    expected = RequestValidator(TOKEN).compute_signature(URL, params)
    assert compute_signature(URL, params, TOKEN) == expected
    assert compute_signature(URL + "B2a1", None, TOKEN) == expected


class MultiDict:
    """The ``getall`` shape twilio-python accepts from Flask/Werkzeug."""

    def __init__(self, items: Mapping[str, Sequence[str]]) -> None:
        self._items = {k: list(v) for k, v in items.items()}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def getall(self, name: str) -> list[str]:
        return self._items[name]


def test_multi_values_sorted_and_deduplicated_like_twilio() -> None:
    multi = {"To": ["b", "a", "b"], "From": ["x"], "Body": ["z", "z"]}
    ours = compute_signature(URL, multi, TOKEN)
    assert ours == RequestValidator(TOKEN).compute_signature(URL, MultiDict(multi))
    assert ours == compute_signature(URL + "BodyzFromxToaTob", None, TOKEN)
    assert ours == compute_signature(URL, {"To": ("a", "b"), "From": "x", "Body": ["z"]}, TOKEN)


# ---------------------------------------------------------------------------------------------
# URL candidates
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h.com/a?x=1", ["https://h.com/a?x=1", "https://h.com:443/a?x=1"]),
        ("https://h.com:443/a", ["https://h.com:443/a", "https://h.com/a"]),
        ("https://h.com:8443/a", ["https://h.com:8443/a", "https://h.com/a"]),
        ("http://h.com/a", ["http://h.com/a", "http://h.com:80/a"]),
        ("http://h.com:8080/a", ["http://h.com:8080/a", "http://h.com/a"]),
        ("https://u:p@h.com/a", ["https://h.com/a", "https://h.com:443/a"]),
        ("https://u:p@h.com:8443/a", ["https://h.com:8443/a", "https://h.com/a"]),
        ("https://[::1]:8443/a", ["https://[::1]:8443/a", "https://[::1]/a"]),
        ("https://[::1]/a", ["https://[::1]/a", "https://[::1]:443/a"]),
        ("https://h.com", ["https://h.com", "https://h.com:443"]),
        (
            "wss://h.com/media",
            [
                "wss://h.com/media",
                "wss://h.com:443/media",
                "wss://h.com:80/media",
                "wss://h.com/media/",
                "wss://h.com:443/media/",
                "wss://h.com:80/media/",
            ],
        ),
        ("wss://h.com/", ["wss://h.com/", "wss://h.com:443/", "wss://h.com:80/"]),
        (
            "ws://h:8080/m?x=1",
            ["ws://h:8080/m?x=1", "ws://h/m?x=1", "ws://h:8080/m/?x=1", "ws://h/m/?x=1"],
        ),
        (
            "wss://h.com",
            [
                "wss://h.com",
                "wss://h.com:443",
                "wss://h.com:80",
                "wss://h.com/",
                "wss://h.com:443/",
                "wss://h.com:80/",
            ],
        ),
        ("not a url", ["not a url"]),
    ],
)
def test_url_candidates(url: str, expected: list[str]) -> None:
    assert url_candidates(url) == expected


def test_candidates_include_twilio_pythons_for_wss() -> None:
    # RequestValidator adds :80 to wss; we keep that and add :443, where Twilio really connects.
    candidates = url_candidates("wss://h.com/media")
    assert "wss://h.com:80/media" in candidates
    assert "wss://h.com:443/media" in candidates


def test_wss_handshake_trailing_slash() -> None:
    signed = compute_signature("wss://h.com/twilio/media/", None, TOKEN)
    assert is_valid_signature("wss://h.com/twilio/media", None, signed, TOKEN)
    signed_443 = compute_signature("wss://h.com:443/twilio/media", None, TOKEN)
    assert is_valid_signature("wss://h.com/twilio/media", None, signed_443, TOKEN)
    # https gets no trailing-slash leniency.
    signed_https = compute_signature("https://h.com/voice/", None, TOKEN)
    assert not is_valid_signature("https://h.com/voice", None, signed_https, TOKEN)


def test_userinfo_is_dropped_before_signing() -> None:
    signed = compute_signature("https://h.com/voice", PARAMS, TOKEN)
    assert is_valid_signature("https://user:pass@h.com/voice", PARAMS, signed, TOKEN)
    assert is_valid_signature("https://user:pass@h.com:443/voice", PARAMS, signed, TOKEN)


# ---------------------------------------------------------------------------------------------
# JSON-body webhooks
# ---------------------------------------------------------------------------------------------

JSON_SIGNATURE = "a9nBmqA0ju/hNViExpshrM61xv4="


def _json_url(body_hash: str) -> str:
    return f"{URL}&bodySHA256={body_hash}"


def test_json_other_body() -> None:
    with pytest.raises(SignatureError, match="body does not match"):
        check_json_signature(JSON_URL, BODY + b" ", JSON_SIGNATURE, TOKEN)


def test_json_missing_body_hash() -> None:
    signature = compute_signature(URL, None, TOKEN)
    with pytest.raises(SignatureError, match="no bodySHA256"):
        check_json_signature(URL, BODY, signature, TOKEN)


def test_json_uppercase_hash_is_refused() -> None:
    url = _json_url(BODY_HASH.upper())
    signature = compute_signature(url, None, TOKEN)
    with pytest.raises(SignatureError, match="body does not match"):
        check_json_signature(url, BODY, signature, TOKEN)


def test_json_repeated_body_hash() -> None:
    url = _json_url(BODY_HASH) + f"&bodySHA256={BODY_HASH}"
    signature = compute_signature(url, None, TOKEN)
    with pytest.raises(SignatureError, match="bodySHA256"):
        check_json_signature(url, BODY, signature, TOKEN)


def test_json_bad_signature_or_header() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        check_json_signature(JSON_URL, BODY, GOOD, TOKEN)
    with pytest.raises(SignatureError, match="missing"):
        check_json_signature(JSON_URL, BODY, None, TOKEN)
    with pytest.raises(SignatureError, match="does not match"):
        check_json_signature(JSON_URL, BODY, JSON_SIGNATURE, "54321")


def test_json_signature_covers_url_not_params() -> None:
    # Signed as if the body were form params: refused.
    signature = compute_signature(JSON_URL, {"property": "value"}, TOKEN)
    with pytest.raises(SignatureError):
        check_json_signature(JSON_URL, BODY, signature, TOKEN)


def test_json_port_variant() -> None:
    url_443 = JSON_URL.replace(".com/", ".com:443/")
    check_json_signature(url_443, BODY, JSON_SIGNATURE, TOKEN)


# ---------------------------------------------------------------------------------------------
# Property tests against twilio-python's RequestValidator
# ---------------------------------------------------------------------------------------------

_URL_SAFE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=8)
# Twilio form values: any text UTF-8 can carry (no lone surrogates).
_TEXT = st.text(st.characters(codec="utf-8"), max_size=20)


@st.composite
def urls(draw: st.DrawFn) -> tuple[str, str, str, bool]:
    """An https URL: (as given, with its port, without a port, whether the port is 443)."""
    host = draw(_URL_SAFE) + "." + draw(st.sampled_from(["com", "io", "example.org"]))
    port = draw(st.sampled_from([None, 443, 8443, 3000]))
    path = "".join("/" + seg for seg in draw(st.lists(_URL_SAFE, max_size=3)))
    query_items = draw(st.lists(st.tuples(_URL_SAFE, _URL_SAFE), max_size=3))
    query = "?" + "&".join(f"{k}={v}" for k, v in query_items) if query_items else ""
    rest = path + query
    with_port = f"https://{host}:{port or 443}{rest}"
    without_port = f"https://{host}{rest}"
    given = with_port if port else without_port
    return given, with_port, without_port, port in (None, 443)


params_strategy = st.dictionaries(_TEXT, _TEXT, max_size=6)


@given(urls(), params_strategy, st.text(alphabet="0123456789abcdef", min_size=1, max_size=32))
def test_matches_twilio_request_validator(
    url: tuple[str, str, str, bool], params: dict[str, str], token: str
) -> None:
    given_url, with_port, without_port, default_port = url
    validator = RequestValidator(token)

    theirs = validator.compute_signature(given_url, params)
    ours = compute_signature(given_url, params, token)
    assert ours == theirs
    assert is_valid_signature(given_url, params, theirs, token)
    assert validator.validate(given_url, params, ours)

    # Signed with or without the port, we agree with twilio-python on every combination.
    for signed_url in (with_port, without_port):
        signature = validator.compute_signature(signed_url, params)
        for checked_url in (with_port, without_port):
            ours_ok = is_valid_signature(checked_url, params, signature, token)
            assert ours_ok == validator.validate(checked_url, params, signature)
            # The port-less signature validates from any port; a :443 one from no port too.
            if signed_url == without_port or default_port:
                assert ours_ok

    # And a different token never validates.
    assert not is_valid_signature(given_url, params, theirs, token + "x")


def _signed_strings(url: str, params: dict[str, str]) -> set[str]:
    """Reference: the strings Twilio may have signed (§5), one per URL spelling."""
    suffix = "".join(name + params[name] for name in sorted(params))
    return {candidate + suffix for candidate in url_candidates(url)}


@given(urls(), params_strategy, _TEXT, _TEXT)
def test_any_change_to_signed_string_invalidates(
    url: tuple[str, str, str, bool], params: dict[str, str], name: str, value: str
) -> None:
    given_url = url[0]
    signature = compute_signature(given_url, params, TOKEN)
    changed = {**params, name: value}
    # Twilio's scheme has no separators ({"ab": "c"} and {"a": "bc"} sign alike), so the
    # expectation is about the signed string, not the dict.
    same = (given_url + "".join(n + params[n] for n in sorted(params))) in _signed_strings(
        given_url, changed
    )
    assert is_valid_signature(given_url, changed, signature, TOKEN) == same
