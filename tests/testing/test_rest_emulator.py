"""The emulated Twilio REST API, checked over real HTTP with httpx and the official twilio library.

Callbacks land on a small hypercorn receiver that checks every signature with twilio-python's
``RequestValidator``; calls dial a real in-process ``VoiceServer`` running the echo pipeline.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import cache, partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from conftest import sentences, spoken
from engine.server import ServerConfig, VoiceServer
from engine.testing.rest import CalleeBehaviour, TwilioEmulator, open_twilio_emulator
from pipelines import echo

TO = "+15558675310"
FROM = "+15017122661"
TOKEN = "emulator-test-token"
ERROR_KEYS = {"code", "message", "more_info", "status"}
RFC_2822 = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$")


def spec_path() -> Path:
    """Twilio's OpenAPI document, shared beside the repository (never copied into it)."""
    return Path(__file__).resolve().parents[2].parent / "shared/twilio/twilio_api_v2010.json"


@cache
def spec() -> dict[str, Any]:
    return json.loads(spec_path().read_text())  # type: ignore[no-any-return]


# -- helpers ------------------------------------------------------------------------------------


@asynccontextmanager
async def emulator(**settings: Any) -> AsyncIterator[tuple[TwilioEmulator, httpx.AsyncClient]]:
    """An emulator, with ``settings`` applied, and an httpx client authenticated to it."""
    async with open_twilio_emulator(spec_path=spec_path(), auth_token=TOKEN) as emu:
        for name, value in settings.items():
            setattr(emu, name, value)
        async with httpx.AsyncClient(
            base_url=emu.base_url, auth=(emu.account_sid, emu.auth_token), timeout=10
        ) as client:
            yield emu, client


def path(emu: TwilioEmulator, resource: str, sid: str | None = None) -> str:
    base = f"/2010-04-01/Accounts/{emu.account_sid}/{resource}"
    return f"{base}/{sid}.json" if sid else f"{base}.json"


async def create_message(
    emu: TwilioEmulator, client: httpx.AsyncClient, **fields: Any
) -> httpx.Response:
    data = {"To": TO, "From": FROM, "Body": "Hello from the emulator", **fields}
    return await client.post(path(emu, "Messages"), data=data)


async def create_call(
    emu: TwilioEmulator, client: httpx.AsyncClient, **fields: Any
) -> httpx.Response:
    data = {"To": TO, "From": FROM, **fields}
    return await client.post(path(emu, "Calls"), data=data)


async def post_form(
    client: httpx.AsyncClient, url: str, pairs: list[tuple[str, str]]
) -> httpx.Response:
    """POST form fields in order, repeated names included."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return await client.post(url, content=urlencode(pairs), headers=headers)


def assert_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert isinstance(body["message"], str) and body["message"]
    return body


async def until(predicate: Callable[[], bool], timeout: float = 5) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


@dataclass
class Received:
    path: str
    params: dict[str, str]
    signed: bool


@asynccontextmanager
async def receiver(status: int = 200) -> AsyncIterator[tuple[str, list[Received]]]:
    """A tiny webhook receiver that answers ``status`` and checks each request's signature."""
    received: list[Received] = []
    validator = RequestValidator(TOKEN)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (event := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = scope["query_string"].decode()
        url = f"http://{headers['host']}{scope['path']}" + (f"?{query}" if query else "")
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
        signed = validator.validate(url, params, headers.get("x-twilio-signature", ""))
        if scope["method"] == "GET":
            params = dict(parse_qsl(query, keep_blank_values=True))
        received.append(Received(scope["path"], params, signed))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config, mode="asgi"))
        yield binds[0], received
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def voice_server() -> AsyncIterator[str]:
    """The engine's voice server (echo pipeline) in this test's nursery."""
    server = VoiceServer(ServerConfig(stage_factory=echo.create, auth_token=TOKEN, port=0))
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(server.serve)
        yield url
        server.shutdown()


def check_against_schema(resource: dict[str, Any], schema_name: str) -> None:
    """Every property of the spec schema, each of the JSON type (and enum, pattern) it says."""
    schemas = spec()["components"]["schemas"]
    properties = schemas[schema_name]["properties"]
    assert set(resource) == set(properties)
    for name, prop in properties.items():
        if "$ref" in prop:
            prop = schemas[prop["$ref"].rsplit("/", 1)[1]]
        value: Any = resource[name]
        if value is None:
            assert prop.get("nullable", False), name
            continue
        expected = {"string": str, "integer": int, "object": dict}[prop["type"]]
        assert type(value) is expected, (name, value)
        if "enum" in prop:
            assert value in prop["enum"], (name, value)
        if "pattern" in prop:
            assert re.match(prop["pattern"], str(value)), (name, value)
        if prop.get("format") == "date-time-rfc-2822":
            assert RFC_2822.match(str(value)), (name, value)
            parsedate_to_datetime(str(value))


# -- authentication -----------------------------------------------------------------------------


async def test_requests_without_valid_credentials_get_401_and_code_20003() -> None:
    async with emulator() as (emu, client):
        url = emu.base_url + path(emu, "Messages")
        data = {"To": TO, "From": FROM, "Body": "hi"}
        async with httpx.AsyncClient() as anonymous:
            response = await anonymous.post(url, data=data)
            assert_error(response, 401, 20003)
            assert response.headers["www-authenticate"].startswith("Basic")
            assert_error(
                await anonymous.post(url, data=data, auth=(emu.account_sid, "x")), 401, 20003
            )
            wrong_user = ("AC" + "0" * 32, emu.auth_token)
            assert_error(await anonymous.post(url, data=data, auth=wrong_user), 401, 20003)
            api_key = (emu.api_key_sid, emu.api_key_secret)
            assert (await anonymous.post(url, data=data, auth=api_key)).status_code == 201
        assert len(emu.messages) == 1
        other = path(emu, "Messages").replace(emu.account_sid, "AC" + "1" * 32)
        assert_error(await client.post(other, data=data), 404, 20404)
        assert_error(await client.get(path(emu, "Calls", "CA" + "2" * 32)), 404, 20404)
        assert [r.status for r in emu.requests] == [401, 401, 401, 201, 404, 404]


async def test_twilio_library_sends_and_fetches_a_message_and_sees_auth_errors() -> None:
    async with emulator() as (emu, _client):

        def use_twilio() -> tuple[Any, Any, list[Any]]:
            twilio = Client(emu.account_sid, emu.auth_token)
            twilio.api.base_url = emu.base_url
            sent = twilio.messages.create(to=TO, from_=FROM, body="Hi from twilio-python")
            fetched = twilio.messages(sent.sid).fetch()
            listed = twilio.messages.list(to=TO)
            return sent, fetched, listed

        sent, fetched, listed = await trio.to_thread.run_sync(use_twilio)
        assert sent.status == "queued" and sent.sid.startswith("SM")
        assert fetched.sid == sent.sid and fetched.body == "Hi from twilio-python"
        assert fetched.num_segments == "1" and fetched.direction == "outbound-api"
        assert [m.sid for m in listed] == [sent.sid]
        assert sorted(emu.messages[sent.sid].form) == [
            ("Body", "Hi from twilio-python"),
            ("From", FROM),
            ("To", TO),
        ]

        def bad_token() -> None:
            twilio = Client(emu.account_sid, "wrong")
            twilio.api.base_url = emu.base_url
            twilio.messages.create(to=TO, from_=FROM, body="x")

        with pytest.raises(TwilioRestException) as caught:
            await trio.to_thread.run_sync(bad_token)
        assert caught.value.status == 401 and caught.value.code == 20003

        def api_key_call_with_bad_number() -> None:
            twilio = Client(emu.api_key_sid, emu.api_key_secret, emu.account_sid)
            twilio.api.base_url = emu.base_url
            twilio.calls.create(to="+15005550001", from_=FROM, twiml="<Response/>")

        with pytest.raises(TwilioRestException) as caught:
            await trio.to_thread.run_sync(api_key_call_with_bad_number)
        assert caught.value.status == 400 and caught.value.code == 21211


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "fields", "status", "code", "mentions"),
    [
        ("Messages", {"Colour": "blue"}, 400, 20001, "Colour"),
        ("Calls", {"Twiml": "<Response/>", "Bogus": "1"}, 400, 20001, "Bogus"),
        ("Messages", {"To": ""}, 400, 21201, "To"),
        ("Calls", {"To": "", "Twiml": "<Response/>"}, 400, 21201, "To"),
        ("Calls", {"Twiml": "<Response/>", "Method": "PUT"}, 400, 20001, "Method"),
        ("Calls", {"Twiml": "<Response/>", "StatusCallbackEvent": "hung-up"}, 400, 20001, "hung"),
        ("Calls", {"Twiml": "<Response/>", "Timeout": "soon"}, 400, 20001, "Timeout"),
        ("Messages", {"AddressRetention": "forget"}, 400, 20001, "AddressRetention"),
        ("Messages", {"ContentSid": "HX123"}, 400, 20001, "ContentSid"),
        ("Messages", {"To": "5558675310"}, 400, 21211, "5558675310"),
        ("Messages", {"To": "+15005550001"}, 400, 21211, "+15005550001"),
        ("Calls", {"To": "+15005550001", "Twiml": "<Response/>"}, 400, 21211, "To"),
        ("Calls", {"To": "+0123", "Twiml": "<Response/>"}, 400, 21211, "+0123"),
        ("Calls", {"From": "nobody", "Twiml": "<Response/>"}, 400, 21212, "From"),
        ("Calls", {"Twiml": "<Response>" + " " * 3990 + "</Response>"}, 400, 20001, "4000"),
        ("Calls", {}, 400, 21205, "Url"),
        ("Calls", {"Url": "not a url"}, 400, 21205, "Url"),
        ("Messages", {"StatusCallback": "http://under_score.example/cb"}, 400, 21609, "Status"),
        ("Messages", {"From": ""}, 400, 21603, "From"),
        ("Messages", {"Body": ""}, 400, 21602, "body"),
        ("Messages", {"Body": "x" * 1601}, 400, 21617, "1600"),
        ("Messages", {"ContentVariables": '["a"]'}, 400, 21656, "ContentVariables"),
        ("Messages", {"To": "whatsapp:" + TO}, 400, 21910, "channel"),
    ],
)
async def test_invalid_requests_get_twilio_errors(
    resource: str, fields: dict[str, str], status: int, code: int, mentions: str
) -> None:
    async with emulator() as (emu, client):
        if resource == "Messages":
            response = await create_message(emu, client, **fields)
        else:
            response = await create_call(emu, client, **fields)
        body = assert_error(response, status, code)
        assert mentions.lower() in body["message"].lower()
        assert emu.calls == {} and emu.messages == {}


async def test_repeated_fields_only_where_the_spec_has_an_array() -> None:
    async with emulator() as (emu, client):
        twice = [("To", TO), ("To", "+15558675311"), ("From", FROM), ("Body", "hi")]
        assert_error(await post_form(client, path(emu, "Messages"), twice), 400, 20001)
        events = [("StatusCallbackEvent", e) for e in ("initiated", "ringing", "answered")]
        form = [("To", TO), ("From", FROM), ("Twiml", "<Response/>"), *events]
        response = await post_form(client, path(emu, "Calls"), form)
        assert response.status_code == 201
        call = emu.calls[response.json()["sid"]]
        assert call.params["StatusCallbackEvent"] == ["initiated", "ringing", "answered"]
        assert call.form == form
        limit = await create_call(emu, client, Twiml="<Response>" + " " * 3979 + "</Response>")
        assert limit.status_code == 201  # exactly 4000 characters


# -- resources ----------------------------------------------------------------------------------


async def test_resources_have_every_schema_property_with_its_json_type() -> None:
    async with receiver() as (hook, received), emulator(time_scale=0.01) as (emu, client):
        created = await create_message(emu, client, StatusCallback=f"{hook}/message-status")
        assert created.status_code == 201
        message = created.json()
        check_against_schema(message, "api.v2010.account.message")
        assert re.fullmatch(r"SM[0-9a-f]{32}", message["sid"])
        assert message["status"] == "queued" and message["price"] is None
        assert message["error_code"] is None and message["num_media"] == "0"
        assert set(message["subresource_uris"]) == {"media", "feedback"}
        assert message["uri"] == path(emu, "Messages", message["sid"])
        await emu.messages[message["sid"]].settled.wait()
        fetched = (await client.get(path(emu, "Messages", message["sid"]))).json()
        check_against_schema(fetched, "api.v2010.account.message")
        assert fetched["status"] == "delivered"
        assert fetched["price"] == "-0.00750" and fetched["price_unit"] == "USD"
        assert fetched["date_sent"] is not None
        assert emu.messages[message["sid"]].progress == ["queued", "sending", "sent", "delivered"]
        await until(lambda: len(received) == 2)
        assert [r.params["MessageStatus"] for r in received] == ["sent", "delivered"]
        assert all(r.signed and r.params["MessageSid"] == message["sid"] for r in received)

        call = await create_call(emu, client, Twiml="<Response><Say>Hi</Say></Response>")
        assert call.status_code == 201
        check_against_schema(call.json(), "api.v2010.account.call")
        assert call.json()["status"] == "queued" and call.json()["direction"] == "outbound-api"
        assert call.json()["to_formatted"] == "(555) 867-5310"
        await emu.calls[call.json()["sid"]].ended.wait()
        ended = (await client.get(path(emu, "Calls", call.json()["sid"]))).json()
        check_against_schema(ended, "api.v2010.account.call")
        assert ended["status"] == "completed" and ended["duration"] == "0"
        assert ended["end_time"] is not None and ended["price"] == "-0.01400"


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("Hello", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters cost two septets
        ("€" * 81, 2),
        ("a" * 152 + "€" + "a" * 10, 2),  # the escape pair is not split
        ("ж" * 70, 1),  # one non-GSM character makes it UCS-2
        ("ж" * 71, 2),
        ("a" * 150 + "ж", 3),
        ("😀" * 35, 1),  # beyond the BMP: two code units each
        ("😀" * 36, 2),
    ],
)
async def test_num_segments_follow_gsm7_and_ucs2(body: str, segments: int) -> None:
    async with emulator() as (emu, client):
        response = await create_message(emu, client, Body=body)
        assert response.json()["num_segments"] == str(segments)


async def test_whatsapp_free_form_needs_an_open_session() -> None:
    user, business = "whatsapp:+14155550123", "whatsapp:+14155238886"
    async with receiver() as (hook, received), emulator() as (emu, client):
        refused = await create_message(emu, client, To=user, From=business, Body="Hello")
        assert_error(refused, 400, 63016)
        template = await create_message(
            emu,
            client,
            To=user,
            From=business,
            Body="",
            ContentSid="HX" + "a" * 32,
            ContentVariables='{"1": "Ana"}',
        )
        assert template.status_code == 201 and template.json()["num_segments"] == "1"

        answer = await emu.post_whatsapp_message(
            f"{hook}/twilio/whatsapp",
            body="Hi there",
            from_number="+14155550123",
            to_number=business,
        )
        assert answer.status_code == 200
        [inbound] = received
        assert inbound.signed and inbound.path == "/twilio/whatsapp"
        assert inbound.params["From"] == user and inbound.params["To"] == business
        assert inbound.params["WaId"] == "14155550123" and inbound.params["Body"] == "Hi there"
        assert inbound.params["MessageSid"] == inbound.params["SmsSid"]
        assert inbound.params["MessageSid"] == inbound.params["SmsMessageSid"]
        assert inbound.params["NumMedia"] == "0" and inbound.params["AccountSid"] == emu.account_sid
        assert emu.messages[inbound.params["MessageSid"]]["direction"] == "inbound"

        reply = await create_message(emu, client, To=user, From=business, Body="Hello")
        assert reply.status_code == 201 and reply.json()["to"] == user


async def test_whatsapp_window_can_fail_asynchronously_like_twilio() -> None:
    async with emulator(whatsapp_window="fail") as (emu, client):
        response = await create_message(
            emu, client, To="whatsapp:+14155550123", From="whatsapp:+14155238886", Body="Hi"
        )
        assert response.status_code == 201
        message = emu.messages[response.json()["sid"]]
        await message.settled.wait()
        fetched = (await client.get(path(emu, "Messages", message.sid))).json()
        assert fetched["status"] == "failed" and fetched["error_code"] == 63016
        check_against_schema(fetched, "api.v2010.account.message")


# -- calls --------------------------------------------------------------------------------------

ALL_EVENTS = [("StatusCallbackEvent", e) for e in ("initiated", "ringing", "answered", "completed")]


async def test_a_call_reaches_the_voice_server_streams_and_reports_its_progress() -> None:
    audio = spoken(sentences()[0])[:8000]
    async with (
        voice_server() as server,
        receiver() as (hook, received),
        emulator() as (emu, client),
    ):
        emu.callee(TO, CalleeBehaviour(say=audio, say_after=0.2, hang_up_after=2.0))
        form = [
            ("To", TO),
            ("From", FROM),
            ("Url", f"{server}/twilio/voice"),
            ("StatusCallback", f"{hook}/twilio/status"),
            *ALL_EVENTS,
        ]
        response = await post_form(client, path(emu, "Calls"), form)
        assert response.status_code == 201
        call = emu.calls[response.json()["sid"]]
        await call.ended.wait()
        await until(lambda: len(received) == 4)

        assert call.end_reason == "callee-hung-up"
        assert call.progress == ["initiated", "ringing", "in-progress", "completed"]
        [webhook] = call.twiml_requests
        assert webhook.ok and webhook.params["CallStatus"] == "in-progress"
        assert (
            webhook.params["Direction"] == "outbound-api" and webhook.params["CallSid"] == call.sid
        )
        assert "<Connect><Stream" in call.twiml[0]
        record = call.record
        assert record is not None and not record.closed_by_server
        echoed = b"".join(payload for _, payload in record.received)
        assert len(echoed) > 4000 and echoed[:4000] == record.mic[:4000]

        assert all(r.signed and r.path == "/twilio/status" for r in received)
        assert [r.params["SequenceNumber"] for r in received] == ["0", "1", "2", "3"]
        statuses = [r.params["CallStatus"] for r in received]
        assert statuses == ["initiated", "ringing", "in-progress", "completed"]
        final = received[-1].params
        assert final["CallbackSource"] == "call-progress-events"
        assert final["CallDuration"] == "2" and final["Duration"] == "1"
        assert final["SipResponseCode"] == "200" and RFC_2822.match(final["Timestamp"])
        assert "CallDuration" not in received[0].params

        fetched = (await client.get(path(emu, "Calls", call.sid))).json()
        assert fetched["status"] == "completed" and fetched["duration"] == "2"


@pytest.mark.parametrize(
    ("outcome", "status", "sip"),
    [("busy", "busy", "486"), ("no-answer", "no-answer", "487"), ("fail", "failed", "404")],
)
async def test_unanswered_calls_end_with_their_status(outcome: Any, status: str, sip: str) -> None:
    async with receiver() as (hook, received), emulator(time_scale=0.01) as (emu, client):
        emu.callee(TO, outcome)
        started = trio.current_time()
        response = await create_call(
            emu, client, Url=f"{hook}/voice", StatusCallback=f"{hook}/status", Timeout="20"
        )
        call = emu.calls[response.json()["sid"]]
        await call.ended.wait()
        if outcome == "no-answer":  # rang for Timeout=20 emulated seconds = 0.2 s
            assert trio.current_time() - started >= 0.2
        await until(lambda: len(received) == 1)
        [final] = received  # only `completed` by default
        assert final.signed and final.params["CallStatus"] == status
        assert final.params["SipResponseCode"] == sip and final.params["CallDuration"] == "0"
        assert final.params["SequenceNumber"] == "0"
        assert call.twiml_requests == []  # never answered, so no TwiML was fetched
        fetched = (await client.get(path(emu, "Calls", call.sid))).json()
        assert fetched["status"] == status and fetched["price"] is None


async def test_time_limit_ends_the_call() -> None:
    async with (
        voice_server() as server,
        receiver() as (hook, received),
        emulator(time_scale=0.05) as (emu, client),
    ):
        response = await create_call(
            emu, client, Url=f"{server}/twilio/voice", StatusCallback=hook, TimeLimit="10"
        )
        call = emu.calls[response.json()["sid"]]
        await call.ended.wait()
        assert call.end_reason == "time-limit" and call.duration == 10
        assert call.record is not None and call.record.frames_sent > 10
        await until(lambda: len(received) == 1)
        assert received[0].params["CallDuration"] == "10"


async def test_updating_status_hangs_up_or_cancels() -> None:
    async with (
        voice_server() as server,
        receiver() as (hook, received),
        emulator() as (emu, client),
    ):
        live = await create_call(emu, client, Url=f"{server}/twilio/voice", StatusCallback=hook)
        call = emu.calls[live.json()["sid"]]
        await until(lambda: call.stream is not None)
        await trio.sleep(0.3)
        hung_up = await client.post(path(emu, "Calls", call.sid), data={"Status": "completed"})
        assert hung_up.status_code == 200 and hung_up.json()["status"] == "completed"
        assert call.end_reason == "api-completed" and call.updates == [[("Status", "completed")]]
        assert call.stream is None and call.record is not None and call.record.frames_sent > 5

        emu.callee("+15558675399", CalleeBehaviour(ring_seconds=30))
        ringing = await create_call(
            emu, client, To="+15558675399", Twiml="<Response/>", StatusCallback=hook
        )
        other = emu.calls[ringing.json()["sid"]]
        await until(lambda: other.status == "ringing")
        canceled = await client.post(path(emu, "Calls", other.sid), data={"Status": "canceled"})
        assert canceled.json()["status"] == "canceled" and other.end_reason == "api-canceled"
        assert_error(
            await client.post(path(emu, "Calls", other.sid), data={"Status": "hung-up"}), 400, 20001
        )
        await until(lambda: len(received) == 2)
        by_call = {r.params["CallSid"]: r.params for r in received}
        assert by_call[call.sid]["CallStatus"] == "completed"
        assert by_call[other.sid]["CallStatus"] == "canceled"
        assert by_call[other.sid]["SipResponseCode"] == "487"


async def test_updating_twiml_redirects_a_live_call() -> None:
    async with voice_server() as server, emulator() as (emu, client):
        response = await create_call(emu, client, Url=f"{server}/twilio/voice")
        call = emu.calls[response.json()["sid"]]
        await until(lambda: call.stream is not None)
        redirect = {"Twiml": "<Response><Say>Goodbye</Say></Response>"}
        updated = await client.post(path(emu, "Calls", call.sid), data=redirect)
        assert updated.status_code == 200
        await call.ended.wait()
        assert call.twiml[1] == redirect["Twiml"] and call.end_reason == "twiml-ended"
        assert call.status == "completed" and len(call.records) == 1
        too_late = await client.post(path(emu, "Calls", call.sid), data=redirect)
        assert_error(too_late, 400, 21220)


async def test_the_server_closing_the_stream_completes_the_call() -> None:
    async with voice_server() as server, emulator() as (emu, client):
        # No stream token in <Parameter>: the server refuses the stream and closes it.
        stream_url = server.replace("http://", "ws://") + "/twilio/media"
        twiml = f'<Response><Connect><Stream url="{stream_url}"/></Connect></Response>'
        response = await create_call(emu, client, Twiml=twiml)
        call = emu.calls[response.json()["sid"]]
        with trio.fail_after(5):
            await call.ended.wait()
        assert call.end_reason == "stream-closed" and call.status == "completed"
        assert call.record is not None and call.stream is None


# -- callbacks ----------------------------------------------------------------------------------


async def run_quick_call(emu: TwilioEmulator, client: httpx.AsyncClient, hook: str) -> str:
    form = [("To", TO), ("From", FROM), ("Twiml", "<Response/>"), ("StatusCallback", hook)]
    form += ALL_EVENTS
    response = await post_form(client, path(emu, "Calls"), form)
    call = emu.calls[response.json()["sid"]]
    await call.ended.wait()
    return call.sid


async def test_callbacks_can_be_disabled_duplicated_or_shuffled() -> None:
    async with receiver() as (hook, received), emulator() as (emu, client):
        emu.status_callbacks_enabled = False
        await run_quick_call(emu, client, f"{hook}/status")
        await trio.sleep(0.1)
        assert received == []

        emu.status_callbacks_enabled = True
        emu.duplicate_callbacks = True
        await run_quick_call(emu, client, f"{hook}/status")
        await until(lambda: len(received) == 8)
        assert [r.params["SequenceNumber"] for r in received] == [
            "0",
            "0",
            "1",
            "1",
            "2",
            "2",
            "3",
            "3",
        ]

        received.clear()
        emu.duplicate_callbacks = False
        emu.callback_order = "shuffled"
        out_of_order = 0
        for _ in range(10):  # each call's four callbacks keep their order with p < 0.3
            sid = await run_quick_call(emu, client, f"{hook}/status")

            def numbers_of(sid: str = sid) -> list[str]:
                return [r.params["SequenceNumber"] for r in received if r.params["CallSid"] == sid]

            await until(lambda: len(numbers_of()) == 4)
            numbers = numbers_of()
            assert sorted(numbers) == ["0", "1", "2", "3"]
            out_of_order += numbers != ["0", "1", "2", "3"]
            if out_of_order:
                break
        assert out_of_order and all(r.signed for r in received)


async def test_callback_failures_are_recorded_and_harmless() -> None:
    async with receiver(status=500) as (hook, _received), emulator() as (emu, client):
        await run_quick_call(emu, client, f"{hook}/status")
        await until(lambda: len(emu.callbacks) == 4)
        assert [c.status for c in emu.callbacks] == [500] * 4
        await run_quick_call(emu, client, "http://127.0.0.1:9/nobody-listens")
        await until(lambda: len(emu.callbacks) == 8)
        assert all(c.status is None and c.error for c in emu.callbacks[4:])
        assert (await create_message(emu, client)).status_code == 201


# -- faults -------------------------------------------------------------------------------------


async def test_injected_errors_answer_first_then_requests_succeed() -> None:
    async with emulator() as (emu, client):
        emu.inject(status=429, retry_after=0.25, path_contains="/Messages")
        limited = await create_message(emu, client)
        assert_error(limited, 429, 20429)
        assert limited.headers["retry-after"] == "0.25"
        assert emu.messages == {}
        assert (await create_call(emu, client, Twiml="<Response/>")).status_code == 201
        assert (await create_message(emu, client)).status_code == 201
        emu.inject(status=503, code=20503, times=2)
        assert_error(await create_message(emu, client), 503, 20503)
        assert_error(await create_call(emu, client, Twiml="<Response/>"), 503, 20503)
        assert (await create_message(emu, client)).status_code == 201
        assert [r.status for r in emu.requests] == [429, 201, 201, 503, 503, 201]


async def test_delay_after_accept_creates_then_answers_late() -> None:
    async with emulator() as (emu, client):
        emu.delay_after_accept(1.0)
        data = {"To": TO, "From": FROM, "Body": "slow"}
        with pytest.raises(httpx.ReadTimeout):
            await client.post(path(emu, "Messages"), data=data, timeout=0.3)
        [message] = emu.messages.values()
        assert message["body"] == "slow"
        started = trio.current_time()
        assert (await create_message(emu, client)).status_code == 201
        assert trio.current_time() - started < 0.5
