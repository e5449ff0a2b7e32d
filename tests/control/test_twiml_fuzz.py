"""Property-based fuzzing of engine.control.twiml.

For arbitrary strings in every argument, :func:`connect_stream` either refuses with
:class:`~engine.errors.ConfigError` or writes well-formed XML that gives back exactly what went
in; :func:`stream_url` answers a ws/wss URL or ``ConfigError``; :func:`parse_connect_stream`
(the emulator's reader of the server's TwiML) answers a ``ConnectStream`` or its documented
``ValueError``.
"""

from __future__ import annotations

import string
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given, note
from hypothesis import strategies as st

from engine.control.twiml import (
    MAX_PARAMETER_LENGTH,
    XML_DECLARATION,
    ConnectStream,
    connect_stream,
    empty_response,
    parse_connect_stream,
    reject,
    say_and_hang_up,
    stream_url,
)
from engine.errors import ConfigError

pytestmark = pytest.mark.fuzz

ANY_TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=60)
"""Any ``str``: control characters, lone surrogates and all."""
XML_TEXT = st.text(
    st.characters(exclude_categories=["Cs"]).filter(
        lambda c: c in "\t\n\r" or (c >= " " and c not in "\ufffe\uffff")
    ),
    max_size=60,
)
"""Text that XML 1.0 can carry (escaped where needed)."""
HOSTS = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{2,6}){0,2}", fullmatch=True),
    st.sampled_from(["127.0.0.1", "[::1]", "localhost:8080", "example.com:443"]),
)
PATHS = st.text(string.ascii_letters + string.digits + "/-._~%!$&'()*+,;=:@é", max_size=30)


def _urls(schemes: list[str]) -> st.SearchStrategy[str]:
    """URLs whose scheme is one of ``schemes``, or close to one, with arbitrary tails."""
    return st.one_of(
        ANY_TEXT,
        st.builds(
            lambda scheme, rest: scheme + rest,
            st.sampled_from([*schemes, *(s.upper() for s in schemes), "ftp://", "", "//"]),
            ANY_TEXT,
        ),
        st.builds(
            lambda scheme, host, path: scheme + host + "/" + path,
            st.sampled_from(schemes),
            HOSTS,
            PATHS,
        ),
    )


STREAM_URLS = _urls(["ws://", "wss://"])
CALLBACK_URLS = _urls(["http://", "https://"])


def _round_trip(
    twiml: str,
    url: str,
    parameters: dict[str, str],
    name: str | None,
    status_callback: str | None,
) -> None:
    """``twiml`` is well-formed TwiML holding exactly these values."""
    assert twiml.startswith(XML_DECLARATION)
    root = ET.fromstring(twiml)  # well-formed, or this raises and the test fails
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["Connect"]
    stream = root.find("Connect/Stream")
    assert stream is not None
    expected_attributes = {"url": url}
    if name is not None:
        expected_attributes["name"] = name
    if status_callback is not None:
        expected_attributes["statusCallback"] = status_callback
    assert stream.attrib == expected_attributes
    assert [(p.get("name"), p.get("value")) for p in stream] == list(parameters.items())
    assert parse_connect_stream(twiml) == ConnectStream(url, parameters, name, status_callback)


@given(
    url=STREAM_URLS,
    parameters=st.dictionaries(ANY_TEXT | XML_TEXT, ANY_TEXT | XML_TEXT, max_size=4),
    name=st.none() | ANY_TEXT | XML_TEXT,
    status_callback=st.none() | CALLBACK_URLS,
)
@example(url="ws://[::1", parameters={}, name=None, status_callback=None).via(
    "fuzzing: urlsplit's ValueError escaped"
)
@example(url="ws://h", parameters={}, name=None, status_callback="http://[").via(
    "fuzzing: urlsplit's ValueError escaped"
)
@example(url="ws://a\u2100b", parameters={}, name=None, status_callback=None).via(
    "fuzzing: netloc invalid under NFKC normalization"
)
def test_connect_stream_writes_what_it_was_given_or_refuses(
    url: str,
    parameters: dict[str, str],
    name: str | None,
    status_callback: str | None,
) -> None:
    try:
        twiml = connect_stream(url, parameters, name=name, status_callback=status_callback)
    except ConfigError as exc:
        assert str(exc)
        return
    note(twiml)
    # Accepted only what the rules allow (PROTOCOL.md §1.1, §1.4, §2) …
    assert urlsplit(url).scheme.lower() in ("ws", "wss") and "?" not in url and "#" not in url
    if status_callback is not None:
        assert urlsplit(status_callback).scheme.lower() in ("http", "https")
    for key, value in parameters.items():
        assert key and len(key) + len(value) < MAX_PARAMETER_LENGTH
    # … and wrote it faithfully.
    _round_trip(twiml, url, parameters, name, status_callback)


@given(
    host=HOSTS,
    path=PATHS,
    secure=st.booleans(),
    parameters=st.dictionaries(
        XML_TEXT.filter(bool), XML_TEXT, max_size=(MAX_PARAMETER_LENGTH - 1) // 120
    ),
    name=st.none() | XML_TEXT,
    status_callback=st.none() | st.builds(lambda h, p: f"https://{h}/{p}", HOSTS, PATHS),
)
def test_valid_arguments_are_never_refused(
    host: str,
    path: str,
    secure: bool,
    parameters: dict[str, str],
    name: str | None,
    status_callback: str | None,
) -> None:
    url = f"{'wss' if secure else 'ws'}://{host}/{path}"
    twiml = connect_stream(url, parameters, name=name, status_callback=status_callback)
    _round_trip(twiml, url, parameters, name, status_callback)


@given(public_url=CALLBACK_URLS, path=st.sampled_from(["/twilio/media", "", "x"]) | ANY_TEXT)
@example(public_url="http://[", path="/twilio/media").via("fuzzing: urlsplit's ValueError")
def test_stream_url_answers_a_websocket_url_or_refuses(public_url: str, path: str) -> None:
    try:
        url = stream_url(public_url, path)
    except ConfigError as exc:
        assert str(exc)
        return
    parts = urlsplit(url)
    assert parts.scheme == ("wss" if urlsplit(public_url).scheme.lower() == "https" else "ws")
    assert parts.netloc == urlsplit(public_url).netloc
    assert not parts.query and not parts.fragment
    assert url.endswith(path.lstrip("/"))


@given(host=HOSTS, prefix=PATHS, secure=st.booleans())
def test_stream_url_of_a_plain_public_url(host: str, prefix: str, secure: bool) -> None:
    prefix = prefix.replace("?", "").replace("#", "")
    base = f"{'https' if secure else 'http'}://{host}/{prefix}"
    expected = f"{'wss' if secure else 'ws'}://{host}/{prefix}".rstrip("/") + "/twilio/media"
    assert stream_url(base) == expected


@given(text=ANY_TEXT | XML_TEXT | st.sampled_from(["\r", "a\r\nb", " \t\n"]))
@example(text="a\rb").via("fuzzing: a carriage return came back as a line feed")
def test_say_and_hang_up_says_exactly_the_text_or_refuses(text: str) -> None:
    try:
        twiml = say_and_hang_up(text)
    except ConfigError as exc:
        assert str(exc)
        return
    root = ET.fromstring(twiml)
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert (root[0].text or "") == text


@given(reason=st.sampled_from(["busy", "rejected"]) | ANY_TEXT)
def test_reject_writes_its_reason_or_refuses(reason: str) -> None:
    try:
        twiml = reject(reason)
    except ConfigError:
        assert reason not in ("busy", "rejected")
        return
    root = ET.fromstring(twiml)
    assert [(child.tag, child.attrib) for child in root] == [("Reject", {"reason": reason})]


_VALID = connect_stream("wss://h.example/m", {"token": "v1.1.a.b", "pipeline": "echo"}, name="n")


@given(
    st.one_of(
        ANY_TEXT,
        st.builds(
            lambda cut, insert: _VALID[:cut] + insert + _VALID[cut:],
            st.integers(0, len(_VALID)),
            ANY_TEXT,
        ),
        st.integers(0, len(_VALID)).map(lambda cut: _VALID[:cut]),
        st.sampled_from(
            [
                '<?xml version="1.0" encoding="bogus"?><Response/>',
                "<!DOCTYPE r [<!ENTITY a 'b'>]><Response/>",
                '<Response xmlns:a="x"><a:Connect><Stream url="u"/></a:Connect></Response>',
                "<Response><Connect><Stream url=''/></Connect></Response>",
                "<Response><Connect><Stream url='u'><Parameter/></Stream></Connect></Response>",
                "<Response>&unknown;</Response>",
                empty_response(),
            ]
        ),
    )
)
def test_parse_connect_stream_reads_or_raises_value_error(twiml: str) -> None:
    try:
        stream = parse_connect_stream(twiml)
    except ValueError as exc:
        assert str(exc)
        return
    assert stream.url
    assert all(stream.parameters)
