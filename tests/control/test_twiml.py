"""Tests for engine.control.twiml: <Connect><Stream> TwiML, compared with twilio-python's."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.twiml.voice_response import Connect, VoiceResponse

from engine.control.twiml import (
    ConnectStream,
    connect_stream,
    empty_response,
    parse_connect_stream,
    stream_url,
)
from engine.errors import ConfigError

WSS = "wss://engine.example.com/twilio/media"
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def _structure(element: ET.Element) -> tuple[str, dict[str, str], list[object], str]:
    """Tag, attributes, children and stripped text: what two TwiML documents must share."""
    children: list[object] = [_structure(child) for child in element]
    return element.tag, dict(element.attrib), children, (element.text or "").strip()


def _twilio_connect_stream(
    url: str,
    parameters: dict[str, str],
    name: str | None = None,
    status_callback: str | None = None,
) -> str:
    response = VoiceResponse()
    connect = Connect()
    kwargs = {}
    if name is not None:
        kwargs["name"] = name
    if status_callback is not None:
        kwargs["status_callback"] = status_callback
    stream = connect.stream(url=url, **kwargs)
    for key, value in parameters.items():
        stream.parameter(name=key, value=value)
    response.append(connect)
    return str(response)


def test_document_shape() -> None:
    twiml = connect_stream(WSS, {"tenant": "42"}, name="agent", status_callback="https://e.com/s")
    assert twiml.startswith(DECLARATION)
    root = ET.fromstring(twiml)
    assert _structure(root) == (
        "Response",
        {},
        [
            (
                "Connect",
                {},
                [
                    (
                        "Stream",
                        {"url": WSS, "name": "agent", "statusCallback": "https://e.com/s"},
                        [("Parameter", {"name": "tenant", "value": "42"}, [], "")],
                        "",
                    )
                ],
                "",
            )
        ],
        "",
    )


@pytest.mark.parametrize(
    ("parameters", "name", "status_callback"),
    [
        ({}, None, None),
        ({"tenant": "42"}, None, None),
        ({"a": "1", "b": "<&>\"'"}, "agent", "https://e.com/status?x=1&y=2"),
        ({"token": "v1.1.AAAAAAAA.BBBB"}, "n", None),
    ],
)
def test_same_structure_as_twilio_python(
    parameters: dict[str, str], name: str | None, status_callback: str | None
) -> None:
    ours = connect_stream(WSS, parameters, name=name, status_callback=status_callback)
    theirs = _twilio_connect_stream(WSS, parameters, name, status_callback)
    assert _structure(ET.fromstring(ours)) == _structure(ET.fromstring(theirs))


def test_empty_response() -> None:
    twiml = empty_response()
    assert twiml.startswith(DECLARATION)
    assert _structure(ET.fromstring(twiml)) == _structure(ET.fromstring(str(VoiceResponse())))
    assert _structure(ET.fromstring(twiml)) == ("Response", {}, [], "")


def test_parse_reads_twilio_python_output() -> None:
    twiml = _twilio_connect_stream(WSS, {"x": "1", "y": "&"}, "agent", "https://e.com/s")
    assert parse_connect_stream(twiml) == ConnectStream(
        url=WSS, parameters={"x": "1", "y": "&"}, name="agent", status_callback="https://e.com/s"
    )


def test_parse_protocol_example() -> None:
    twiml = """<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Say voice="Polly.Amy" language="en-GB">Connecting you now.</Say>
  <Connect>
    <Stream url="wss://agent.example.com/media" name="agent"
            statusCallback="https://agent.example.com/stream-status">
      <Parameter name="tenant" value="42"/>
    </Stream>
  </Connect>
  <Say>Reached only after the WebSocket closes.</Say>
  <Hangup/>
</Response>"""
    assert parse_connect_stream(twiml) == ConnectStream(
        url="wss://agent.example.com/media",
        parameters={"tenant": "42"},
        name="agent",
        status_callback="https://agent.example.com/stream-status",
    )


def test_parse_takes_the_first_connect_stream() -> None:
    twiml = (
        "<Response><Start><Stream url='wss://a/start'/></Start>"
        "<Connect><ConversationRelay url='wss://a/relay'/></Connect>"
        "<Connect><Stream url='wss://a/one'><Parameter name='p' value='1'/></Stream>"
        "<Stream url='wss://a/two'/></Connect>"
        "<Connect><Stream url='wss://a/three'/></Connect></Response>"
    )
    parsed = parse_connect_stream(twiml)
    assert parsed.url == "wss://a/one"
    assert parsed.parameters == {"p": "1"}
    assert parsed.name is None
    assert parsed.status_callback is None


def test_connect_stream_is_frozen() -> None:
    parsed = parse_connect_stream(connect_stream(WSS))
    with pytest.raises(AttributeError):
        parsed.url = "wss://other"  # type: ignore[misc]
    assert not hasattr(parsed, "__dict__")


@pytest.mark.parametrize(
    ("twiml", "message"),
    [
        ("not xml", "not well-formed"),
        ("<Response><Connect>", "not well-formed"),
        ("<Reply><Connect><Stream url='wss://a'/></Connect></Reply>", "root must be <Response>"),
        ("<Response/>", "no <Connect><Stream>"),
        ("<Response><Say>hi</Say></Response>", "no <Connect><Stream>"),
        ("<Response><Start><Stream url='wss://a'/></Start></Response>", "no <Connect><Stream>"),
        ("<Response><Connect><Room>r</Room></Connect></Response>", "no <Connect><Stream>"),
        ("<Response><Stream url='wss://a'/></Response>", "no <Connect><Stream>"),
        ("<Response><Connect><Stream/></Connect></Response>", "no url"),
        (
            "<Response><Connect><Stream url='wss://a'><Parameter value='1'/></Stream>"
            "</Connect></Response>",
            "no name",
        ),
        (
            '<!DOCTYPE r [<!ENTITY a "aaaa">]><Response><Connect><Stream url="&a;"/>'
            "</Connect></Response>",
            "DOCTYPE",
        ),
    ],
)
def test_parse_refusals(twiml: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_connect_stream(twiml)


# ---------------------------------------------------------------------------------------------
# Refusals when building
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "wss://e.com/media?token=x",
        "wss://e.com/media?",
        "wss://e.com/media#frag",
        "https://e.com/media",
        "http://e.com/media",
        "/twilio/media",
        "wss:///media",
        "e.com/media",
        "wss://e.com/\x00",
    ],
)
def test_bad_stream_url(url: str) -> None:
    with pytest.raises(ConfigError):
        connect_stream(url)


def test_ws_and_wss_accepted() -> None:
    assert parse_connect_stream(connect_stream("ws://127.0.0.1:8080/m")).url == (
        "ws://127.0.0.1:8080/m"
    )
    assert parse_connect_stream(connect_stream("WSS://e.com/m")).url == "WSS://e.com/m"


def test_parameter_length_limit() -> None:
    fits = {"n": "v" * 498}  # 499 characters together
    assert parse_connect_stream(connect_stream(WSS, fits)).parameters == fits
    with pytest.raises(ConfigError, match="under 500"):
        connect_stream(WSS, {"n": "v" * 499})
    with pytest.raises(ConfigError, match="under 500"):
        connect_stream(WSS, {"n" * 250: "v" * 250})


@pytest.mark.parametrize(
    ("parameters", "kwargs"),
    [
        ({"": "x"}, {}),
        ({"a": "\x00"}, {}),
        ({"a": "\x1b[31m"}, {}),
        ({"\ufffe": "x"}, {}),
        ({}, {"name": "bad\x01name"}),
        ({}, {"status_callback": "/relative/status"}),
        ({}, {"status_callback": "wss://e.com/status"}),
    ],
)
def test_other_refusals(parameters: dict[str, str], kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        connect_stream(WSS, parameters, **kwargs)


# ---------------------------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------------------------

# Text XML 1.0 can carry, with the markup characters over-represented.
_xml_char = st.one_of(
    st.sampled_from("<&>\"' \t\r\n;#"),
    st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]).filter(
        lambda c: c not in "\ufffe\uffff"
    ),
)
_xml_text = st.text(_xml_char, max_size=40)


@given(
    st.dictionaries(_xml_text.filter(bool), _xml_text, max_size=6),
    st.none() | _xml_text,
    st.none() | st.sampled_from(["https://e.com/s", "http://e.com/s?a=1&b=<2>"]),
)
def test_round_trip(
    parameters: dict[str, str], name: str | None, status_callback: str | None
) -> None:
    twiml = connect_stream(WSS, parameters, name=name, status_callback=status_callback)
    parsed = parse_connect_stream(twiml)
    assert parsed == ConnectStream(WSS, parameters, name, status_callback)
    assert list(parsed.parameters) == list(parameters)
    theirs = _twilio_connect_stream(WSS, parameters, name, status_callback)
    assert _structure(ET.fromstring(twiml)) == _structure(ET.fromstring(theirs))


# ---------------------------------------------------------------------------------------------
# stream_url
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "path", "expected"),
    [
        ("https://engine.example.com", "/twilio/media", "wss://engine.example.com/twilio/media"),
        ("https://engine.example.com/", "/twilio/media", "wss://engine.example.com/twilio/media"),
        ("http://localhost:8080", "/twilio/media", "ws://localhost:8080/twilio/media"),
        ("https://x.ngrok.app/voice", "/twilio/media", "wss://x.ngrok.app/voice/twilio/media"),
        ("https://x.ngrok.app/voice/", "twilio/media", "wss://x.ngrok.app/voice/twilio/media"),
        ("https://h:8443", "/m", "wss://h:8443/m"),
        ("HTTPS://h.com", "/m", "wss://h.com/m"),
        ("http://[::1]:8000", "/m", "ws://[::1]:8000/m"),
        ("https://h.com/base", "", "wss://h.com/base"),
    ],
)
def test_stream_url(public_url: str, path: str, expected: str) -> None:
    assert stream_url(public_url, path) == expected
    connect_stream(expected)  # what stream_url makes, connect_stream takes


def test_stream_url_default_path() -> None:
    assert stream_url("https://e.com") == "wss://e.com/twilio/media"


@pytest.mark.parametrize(
    ("public_url", "path"),
    [
        ("https://e.com?x=1", "/m"),
        ("https://e.com/?x=1", "/m"),
        ("https://e.com/?", "/m"),
        ("https://e.com/#top", "/m"),
        ("ftp://e.com", "/m"),
        ("wss://e.com", "/m"),
        ("e.com", "/m"),
        ("https://", "/m"),
        ("https://user:pass@e.com", "/m"),
        ("https://e.com", "/m?x=1"),
    ],
)
def test_stream_url_refusals(public_url: str, path: str) -> None:
    with pytest.raises(ConfigError):
        stream_url(public_url, path)
