"""The emulated Twilio REST API over real HTTP: auth, validation, resources, messages, faults.

Checked with httpx and the official twilio library; callbacks land on a webhook receiver that
checks every signature (see ``twilio_api_support``). Calls have their own tests, in
``test_twilio_api_calls``.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import trio
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from twilio_api_support import (
    FROM,
    TO,
    assert_error,
    check_against_schema,
    create_call,
    create_message,
    emulator,
    path,
    post_form,
    receiver,
    until,
)

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
