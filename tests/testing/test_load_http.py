"""The load generator's HTTP side (sans-IO): TwiML followed as Twilio would, the signed webhook
read by an h11 server and checked by the engine's signature code, the WebSocket handshake
read and answered by wsproto."""

from __future__ import annotations

from urllib.parse import parse_qsl

import h11
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request

from engine.control.signature import is_valid_signature
from engine.control.twiml import connect_stream, empty_response, reject, say_and_hang_up
from engine.testing.load_http import (
    Refusal,
    StreamAnswer,
    WebhookExchange,
    handshake_request,
    read_handshake,
    read_twiml,
    stream_target,
)
from engine.testing.load_wire import WireError

BASE = "http://127.0.0.1:8000/twilio/voice"
TOKEN = "load-test-token"
WS = "ws://127.0.0.1:9000/twilio/media"

TWIML = [
    pytest.param(
        connect_stream(WS, {"t": "token.1", "pipeline": "echo"}),
        StreamAnswer(WS, {"t": "token.1", "pipeline": "echo"}, True),
        id="engine's <Connect><Stream>",
    ),
    pytest.param(reject("busy"), Refusal("reject:busy"), id="engine's <Reject busy>"),
    pytest.param(reject("rejected"), Refusal("reject:rejected"), id="<Reject rejected>"),
    pytest.param("<Response><Reject/></Response>", Refusal("reject:rejected"), id="bare Reject"),
    pytest.param(say_and_hang_up("Sorry."), Refusal("hangup"), id="engine's Say + Hangup"),
    pytest.param(
        f'<Response><Start><Stream url="{WS}"><Parameter name="a" value="1"/></Stream></Start>'
        "<Pause length='60'/></Response>",
        StreamAnswer(WS, {"a": "1"}, False),
        id="<Start><Stream> is inbound only",
    ),
    pytest.param(
        f'<Response><Say>Hi</Say><Pause/><Connect><Stream url="{WS}"/></Connect></Response>',
        StreamAnswer(WS, {}, True),
        id="verbs before the stream",
    ),
    pytest.param(
        '<Response><Connect><Stream url="/media"><Parameter name="e" /></Stream></Connect>'
        "</Response>",
        StreamAnswer("ws://127.0.0.1:8000/media", {"e": ""}, True),
        id="relative url, valueless parameter",
    ),
    pytest.param(
        f'<Response><Hangup/><Connect><Stream url="{WS}"/></Connect></Response>',
        Refusal("hangup"),
        id="hangup before the stream",
    ),
    pytest.param(
        f'<Response><Start><Recording/></Start><Connect><Stream url="{WS}"/></Connect></Response>',
        StreamAnswer(WS, {}, True),
        id="<Start> without a stream is passed",
    ),
]


@pytest.mark.parametrize(("twiml", "expected"), TWIML)
def test_twiml_is_followed_as_twilio_would(twiml: str, expected: object) -> None:
    assert read_twiml(twiml, BASE) == expected
    assert read_twiml(twiml.encode(), BASE) == expected


BAD_TWIML = [
    pytest.param("<Response>", "not well-formed", id="broken XML"),
    pytest.param('<!DOCTYPE x [<!ENTITY a "b">]><Response/>', "DOCTYPE", id="doctype"),
    pytest.param("<Reply/>", "root", id="wrong root"),
    pytest.param(empty_response(), "neither streams nor refuses", id="empty"),
    pytest.param("<Response><Connect><Stream/></Connect></Response>", "url", id="stream no url"),
    pytest.param(
        f'<Response><Connect><Stream url="{WS}"><Parameter value="v"/></Stream></Connect>'
        "</Response>",
        "name",
        id="parameter no name",
    ),
    pytest.param(
        '<Response><Connect><ConversationRelay url="wss://x"/></Connect></Response>',
        "ConversationRelay",
        id="ConversationRelay",
    ),
    pytest.param("<Response><Connect/></Response>", "nothing", id="empty Connect"),
]


@pytest.mark.parametrize(("twiml", "error"), BAD_TWIML)
def test_twiml_twilio_could_not_follow_is_a_wire_error(twiml: str, error: str) -> None:
    with pytest.raises(WireError, match=error):
        read_twiml(twiml, BASE)


def exchange() -> WebhookExchange:
    return WebhookExchange(BASE + "?x=1", TOKEN, call_sid="CA" + "a" * 32, account_sid="AC1")


def test_the_webhook_is_twilios_signed_form_post() -> None:
    hook = exchange()
    server = h11.Connection(h11.SERVER)
    server.receive_data(hook.request())
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert (request.method, request.target) == (b"POST", b"/twilio/voice?x=1")
    headers = {k.decode(): v.decode() for k, v in request.headers}
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert headers["host"] == "127.0.0.1:8000"
    body = b""
    while isinstance(event := server.next_event(), h11.Data):
        body += event.data
    assert isinstance(event, h11.EndOfMessage)
    form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    assert form["CallSid"] == "CA" + "a" * 32 and form["CallStatus"] == "ringing"
    assert form["Direction"] == "inbound" and form["ApiVersion"] == "2010-04-01"
    assert is_valid_signature(BASE + "?x=1", form, headers["x-twilio-signature"], TOKEN)
    assert not is_valid_signature(BASE + "?x=1", form, headers["x-twilio-signature"], "other")


def test_an_unsigned_webhook_has_no_signature_header() -> None:
    hook = WebhookExchange(BASE, None, call_sid="CA1", account_sid="AC1")
    assert b"X-Twilio-Signature" not in hook.request()


def answer(
    status: int, body: bytes, content_type: bytes = b"text/xml", chunked: bool = False
) -> bytes:
    server = h11.Connection(h11.SERVER)
    server.receive_data(exchange().request())
    while server.next_event() is not h11.NEED_DATA:
        pass
    framing = (
        (b"Transfer-Encoding", b"chunked") if chunked else (b"Content-Length", b"%d" % len(body))
    )
    head = server.send(
        h11.Response(status_code=status, headers=[(b"Content-Type", content_type), framing])
    )
    assert head is not None
    return (
        head + (server.send(h11.Data(data=body)) or b"") + (server.send(h11.EndOfMessage()) or b"")
    )


@pytest.mark.parametrize("chunked", [False, True])
def test_the_webhook_answer_is_read_in_any_split(chunked: bool) -> None:
    data = answer(200, connect_stream(WS, {"t": "1"}).encode(), chunked=chunked)
    for cut in (1, 10, len(data) // 2, len(data) - 1):
        hook = exchange()
        hook.request()
        assert hook.feed(data[:cut]) is None
        assert hook.feed(data[cut:]) == StreamAnswer(WS, {"t": "1"}, True)


BAD_ANSWERS = [
    pytest.param(answer(403, b"invalid X-Twilio-Signature\n"), "HTTP 403", id="403"),
    pytest.param(answer(200, b"{}", b"application/json"), "not TwiML", id="json"),
    pytest.param(answer(200, b"<Response/>"), "neither streams", id="empty TwiML"),
    pytest.param(answer(200, b"x" * 70000), "64 KiB", id="huge"),
    pytest.param(b"SSH-2.0-OpenSSH\r\n\r\n", "not valid HTTP", id="not HTTP"),
]


@pytest.mark.parametrize(("data", "error"), BAD_ANSWERS)
def test_bad_webhook_answers_are_wire_errors(data: bytes, error: str) -> None:
    hook = exchange()
    hook.request()
    with pytest.raises(WireError, match=error):
        hook.feed(data)


def test_a_webhook_answer_cut_short_is_a_wire_error() -> None:
    hook = exchange()
    hook.request()
    assert hook.feed(answer(200, reject().encode())[:-5]) is None
    with pytest.raises(WireError, match="closed"):
        hook.feed(b"")


def test_the_handshake_is_signed_and_wsprotos_accept_is_checked() -> None:
    request, key = handshake_request(WS, TOKEN)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(request)
    (event,) = list(server.events())
    assert isinstance(event, Request) and event.target == "/twilio/media"
    headers = {k.decode().lower(): v.decode() for k, v in event.extra_headers}
    assert is_valid_signature(WS, {}, headers["x-twilio-signature"], TOKEN)
    reply = server.send(AcceptConnection())
    for cut in (1, len(reply) // 2, len(reply) - 1):
        assert read_handshake(reply[:cut], key) is None
    assert read_handshake(reply + b"\x81\x02hi", key) == b"\x81\x02hi"
    _, other_key = handshake_request(WS, TOKEN)
    with pytest.raises(WireError, match="Accept"):
        read_handshake(reply, other_key)


def test_a_refused_or_garbled_handshake_is_a_wire_error() -> None:
    request, key = handshake_request(WS, None)
    assert b"X-Twilio-Signature" not in request
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(request)
    list(server.events())
    with pytest.raises(WireError, match="HTTP 403"):
        read_handshake(server.send(RejectConnection(status_code=403)), key)
    with pytest.raises(WireError, match="not HTTP"):
        read_handshake(b"\x00\x01garbage\r\n\r\n", key)
    with pytest.raises(WireError, match="upgrade"):
        read_handshake(b"HTTP/1.1 101 OK\r\nConnection: Upgrade\r\n\r\n", key)
    with pytest.raises(WireError, match="64 KiB"):
        read_handshake(b"x" * 70000, key)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://h:81/a/b?q=1", ("h", 81, "/a/b?q=1")),
        ("ws://h", ("h", 80, "/")),
        ("wss://h/x", ("h", 443, "/x")),
        ("wss://h:8443", ("h", 8443, "/")),
        ("http://h/x", None),
        ("ws:///x", None),
        ("ws://h:port/x", None),
    ],
)
def test_stream_targets(url: str, expected: tuple[str, int, str] | None) -> None:
    if expected is None:
        with pytest.raises(WireError, match=r"ws://|host|port"):
            stream_target(url)
    else:
        assert stream_target(url) == expected
