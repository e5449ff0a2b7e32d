"""Property-based fuzzing of the webhook routes (``/twilio/voice``, ``/twilio/status``,
``/twilio/whatsapp``), in process through Quart's test client.

Arbitrary form fields, values, query strings and raw bodies, signed correctly (by twilio-python's
RequestValidator) or not, get a 2xx or 4xx answer, never a 5xx or an exception; correctly signed
forms get their route's success answer, anything else a 403. Each example runs a whole request,
so this target takes fewer examples than the sans-IO ones (see ``fuzz_examples``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode

import pytest
import trio
from hypothesis import example, given, note, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from conftest import fuzz_examples
from engine.server import ServerConfig, VoiceServer
from pipelines.echo import create as echo

pytestmark = pytest.mark.fuzz

TOKEN = "webhook-fuzz-token"
PUBLIC_URL = "https://voice.example.com"
FORM = "application/x-www-form-urlencoded"
ROUTES = {"/twilio/voice": 200, "/twilio/status": 204, "/twilio/whatsapp": 200}

TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
NAMES = (
    st.sampled_from(
        [
            "CallSid",
            "CallStatus",
            "Direction",
            "From",
            "To",
            "SequenceNumber",
            "CallDuration",
            "Body",
        ]
    )
    | TEXT
)
VALUES = (
    TEXT
    | st.sampled_from(["CA" + "1" * 32, "ringing", "completed", "inbound", "outbound-api"])
    | st.sampled_from(["", "²", "-1", "9" * 5000, "\x00", "a" * 2000, "whatsapp:+15005550006"])
)


@dataclass
class Request:
    path: str
    body: bytes
    content_type: str
    signature: str | None


def _signed_params(body: bytes) -> MultiDict[str, str]:
    """The form as a server decodes it (what Twilio signed)."""
    return MultiDict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


@st.composite
def requests(draw: st.DrawFn) -> tuple[Request, str]:
    """A webhook request, and how it is signed: ``right``, or ``wrong`` (none, garbage, or
    another URL's signature); ``form`` when it is also a well-formed form."""
    route = draw(st.sampled_from(sorted(ROUTES)))
    query = draw(
        st.sampled_from(["", "?pipeline=echo", "?pipeline=%00", "?pipeline=" + "x" * 600])
        | TEXT.map(lambda t: "?pipeline=" + quote(t, safe=""))
        # (not a bare "?": the server cannot tell "/x?" from "/x", so neither can its check)
        | TEXT.filter(bool).map(lambda t: "?" + quote(t, safe="=&"))
    )
    path = route + query
    pairs = draw(st.lists(st.tuples(NAMES, VALUES), max_size=8))
    shape = draw(st.sampled_from(["form", "form", "raw", "other-type"]))
    if shape == "form":
        body, content_type = urlencode(pairs).encode(), FORM
    elif shape == "raw":
        body, content_type = draw(st.binary(max_size=300)), FORM
    else:
        body = draw(st.binary(max_size=300))
        content_type = draw(
            st.sampled_from(["application/json", "multipart/form-data; boundary=x", "text/plain"])
            # A header value cannot carry a line break on the wire (the test client refuses it).
            | TEXT.filter(lambda value: "\n" not in value and "\r" not in value)
        )
    signing = draw(st.sampled_from(["right", "right", "none", "garbage", "other-url"]))
    validator = RequestValidator(TOKEN)
    signature: str | None
    if signing == "right":
        params = _signed_params(body) if content_type == FORM else {}
        signature = validator.compute_signature(PUBLIC_URL + path, params)
    elif signing == "none":
        signature = None
    elif signing == "garbage":
        signature = draw(
            st.binary(max_size=40)
            .map(lambda b: b.decode("latin-1"))
            # As for the content type: no line break in a header value on the wire.
            .filter(lambda value: "\n" not in value and "\r" not in value)
        )
    else:
        signature = validator.compute_signature(PUBLIC_URL + "/elsewhere", _signed_params(body))
    if signing != "right":
        return Request(path, body, content_type, signature), "wrong"
    return Request(path, body, content_type, signature), "form" if shape == "form" else "right"


def _signed(path: str, body: bytes) -> Request:
    """A correctly signed form request."""
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC_URL + path, _signed_params(body))
    return Request(path, body, FORM, signature)


async def _post(request: Request) -> tuple[int, bytes]:
    server = VoiceServer(ServerConfig(stage_factory=echo, auth_token=TOKEN, public_url=PUBLIC_URL))
    client = server.app.test_client()
    headers = {"Content-Type": request.content_type}
    if request.signature is not None:
        headers["X-Twilio-Signature"] = request.signature
    response = await client.post(request.path, data=request.body, headers=headers)
    return response.status_code, await response.get_data(as_text=False)


@settings(max_examples=fuzz_examples(default=40, fuzz=4_000))
@given(requests())
@example((_signed("/twilio/voice?pipeline=%00", b"CallSid=CA1"), "form")).via(
    "fuzzing: a pipeline XML cannot carry raised ConfigError, answered 500"
)
@example((_signed("/twilio/voice?pipeline=" + "x" * 600, b"CallSid=CA1"), "form")).via(
    "fuzzing: a pipeline too long for a <Parameter> raised ConfigError, answered 500"
)
@example(
    (_signed("/twilio/status", b"CallSid=CA1&CallStatus=completed&CallDuration=%C2%B2"), "form")
).via("fuzzing: CallDuration '²' raised ValueError, answered 500")
def test_webhooks_answer_2xx_or_4xx(case: tuple[Request, str]) -> None:
    request, signing = case
    note(f"{request!r}")
    status, body = trio.run(_post, request)
    note(f"-> {status} {body[:300]!r}")
    assert 200 <= status < 500
    if signing == "wrong":
        assert status == 403
        return
    if signing == "right":  # signed, but not a form: whatever the route makes of it
        return
    route = request.path.partition("?")[0]
    fields = dict(_signed_params(request.body))
    if route == "/twilio/voice" and not fields.get("CallSid"):
        assert status == 400
    elif route == "/twilio/voice":
        assert status in (200, 400)  # 400: a ?pipeline= not served, or one TwiML cannot carry
        if status == 200:
            assert ET.fromstring(body).tag == "Response"
    else:
        assert status == ROUTES[route]
