"""The actions end to end against the Twilio emulator (a real HTTP server) and a real server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from conftest import SPEC_PATH, sentences, spoken
from engine.control.calls import make_call
from engine.control.messages import send_sms, send_whatsapp
from engine.control.rest import Credentials, TwilioClient
from engine.errors import InvalidInput, TwilioAPIError
from engine.server import ServerConfig, VoiceServer
from engine.testing import CalleeBehaviour, TwilioEmulator, open_twilio_emulator
from pipelines.turn_echo import create as turn_echo

FROM = "+15005550006"
CALLEE = "+14155552671"


@asynccontextmanager
async def twilio() -> AsyncIterator[tuple[TwilioEmulator, TwilioClient]]:
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        credentials = Credentials(emulator.account_sid, emulator.auth_token)
        async with TwilioClient(credentials, base_url=emulator.base_url, backoff=0.05) as client:
            yield emulator, client


@asynccontextmanager
async def voice_server(emulator: TwilioEmulator) -> AsyncIterator[VoiceServer]:
    server = VoiceServer(
        ServerConfig(stage_factory=turn_echo, auth_token=emulator.auth_token, port=0)
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        await server.switchboard.ready()  # webhooks wait for the start-up capacity measurement
        yield server
        server.shutdown()


async def place(emulator: TwilioEmulator, client: TwilioClient, server: VoiceServer, **kw):  # type: ignore[no-untyped-def]
    assert server.public_url is not None
    return await make_call(
        client,
        server.status_board,
        to=kw.pop("to", CALLEE),
        from_=FROM,
        public_url=server.public_url,
        pipeline=kw.pop("pipeline", "turn-echo"),
        first_poll=kw.pop("first_poll", 1.0),
        **kw,
    )


async def test_make_call_runs_the_pipeline_live_and_returns_when_the_call_ends() -> None:
    speech = spoken(sentences()[2])
    async with twilio() as (emulator, client), voice_server(emulator) as server:
        emulator.callee(
            CALLEE,
            CalleeBehaviour(say=speech, say_after=0.3, hang_up_after=len(speech) / 8000 + 2.5),
        )
        result = await place(emulator, client, server)
    call = emulator.calls[result["callSid"]]
    assert result == {
        "callSid": call.sid,
        "status": "completed",
        "duration": call.duration,
        "direction": "outbound-api",
    }
    assert isinstance(result["duration"], int) and result["duration"] >= 3
    # Proof the pipeline ran live: the callee heard its own sentence back (turn-echo).
    assert call.record is not None
    middle = speech[len(speech) // 3 : len(speech) // 3 + 4000].replace(b"\x7f", b"\xff")
    assert middle in bytes(call.record.heard).replace(b"\x7f", b"\xff")
    # The documented request: Url to our webhook with the pipeline, callbacks for every event.
    assert (
        call.param(
            "Url",
        )
        == f"{server.public_url}/twilio/voice?pipeline=turn-echo"
    )
    assert sorted(call.params["StatusCallbackEvent"]) == sorted(
        ["initiated", "ringing", "answered", "completed"]
    )


@pytest.mark.parametrize(
    ("outcome", "status"), [("busy", "busy"), ("no-answer", "no-answer"), ("fail", "failed")]
)
async def test_unanswered_calls_give_their_status(outcome: str, status: str) -> None:
    async with twilio() as (emulator, client), voice_server(emulator) as server:
        emulator.time_scale = 0.05
        emulator.callee(CALLEE, CalleeBehaviour(outcome=outcome, ring_seconds=0.1))  # type: ignore[arg-type]
        result = await place(emulator, client, server, ring_timeout=20)
    assert result["status"] == status
    assert result["duration"] == 0


async def test_a_call_past_max_duration_times_out_and_is_hung_up() -> None:
    async with twilio() as (emulator, client), voice_server(emulator) as server:
        result = await place(emulator, client, server, max_duration=3 / 60)
        call = emulator.calls[result["callSid"]]
        with trio.fail_after(5):
            await call.ended.wait()
    assert result["status"] == "timeout"
    assert ("Status", "completed") in [field for update in call.updates for field in update]
    assert call.status == "completed" and call.end_reason == "api-completed"


async def test_without_status_callbacks_the_call_is_polled_to_its_end() -> None:
    async with twilio() as (emulator, client), voice_server(emulator) as server:
        emulator.status_callbacks_enabled = False
        emulator.callee(CALLEE, CalleeBehaviour(hang_up_after=1.5))
        result = await place(emulator, client, server, first_poll=0.3)
        gets = [r for r in emulator.requests if r.method == "GET" and result["callSid"] in r.path]
    assert result["status"] == "completed"
    assert len(gets) >= 2  # it had to ask
    assert emulator.calls[result["callSid"]].callbacks == []


async def test_make_call_refuses_bad_numbers_before_any_request() -> None:
    async with twilio() as (emulator, client), voice_server(emulator) as server:
        with pytest.raises(InvalidInput, match="To"):
            await place(emulator, client, server, to="+1555")
        assert emulator.requests == []


async def test_sms_output_and_exact_form() -> None:
    async with twilio() as (emulator, client):
        output = await send_sms(client, to=CALLEE, from_=FROM, body="Your table is booked ✔")
        message = emulator.messages[output["sid"]]
    assert sorted(name for name, _ in message.form) == ["Body", "From", "To"]
    assert output["from"] == {"rawNumber": FROM}
    assert output["to"] == CALLEE and output["body"] == "Your table is booked ✔"
    assert output["numSegments"] == "1" and isinstance(output["numMedia"], str)
    assert set(output["dateCreated"]) == {"dateTime", "zoneId"}
    assert output["direction"] == "outbound-api"


async def test_whatsapp_template_sends_content_sid_and_variables_as_json_string() -> None:
    async with twilio() as (emulator, client):
        output = await send_whatsapp(
            client,
            to=CALLEE,
            from_="whatsapp:" + FROM,
            use_template=True,
            content_sid="HX" + "a" * 32,
            content_variables={"1": "Ana", "2": "3pm"},
        )
        form = dict(emulator.messages[output["sid"]].form)
    assert form == {
        "To": "whatsapp:" + CALLEE,
        "From": "whatsapp:" + FROM,
        "ContentSid": "HX" + "a" * 32,
        "ContentVariables": json.dumps({"1": "Ana", "2": "3pm"}),
    }
    assert output["to"] == "whatsapp:" + CALLEE


async def test_whatsapp_free_text_needs_an_open_session_63016() -> None:
    async with twilio() as (emulator, client):
        with pytest.raises(TwilioAPIError) as info:
            await send_whatsapp(client, to=CALLEE, from_=FROM, use_template=False, body="hi")
        assert info.value.code == 63016
        emulator.open_whatsapp_session("whatsapp:" + CALLEE)
        output = await send_whatsapp(client, to=CALLEE, from_=FROM, use_template=False, body="hi")
        assert dict(emulator.messages[output["sid"]].form)["Body"] == "hi"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"use_template": True}, "ContentSid"),
        ({"use_template": True, "content_sid": "XX123"}, "ContentSid"),
        ({"use_template": False}, "Body"),
        ({"use_template": False, "body": "x" * 1601}, "Body"),
        ({"use_template": False, "body": "hi", "to": "+1555"}, "To"),
    ],
)
async def test_whatsapp_refuses_missing_fields_up_front(
    kwargs: dict[str, object], field: str
) -> None:
    async with twilio() as (emulator, client):
        args = {"to": CALLEE, "from_": FROM, **kwargs}
        with pytest.raises(InvalidInput) as info:
            await send_whatsapp(client, **args)  # type: ignore[arg-type]
        assert info.value.field == field
        assert emulator.requests == []


async def test_twilio_errors_surface_with_their_codes() -> None:
    async with twilio() as (emulator, client):
        with pytest.raises(TwilioAPIError) as invalid:
            await send_sms(client, to="+15005550001", from_=FROM, body="x")
        assert (invalid.value.code, invalid.value.status) == (21211, 400)
        assert invalid.value.more_info == "https://www.twilio.com/docs/errors/21211"
        bad = Credentials(emulator.account_sid, "wrong-token")
        async with TwilioClient(bad, base_url=emulator.base_url) as wrong:
            with pytest.raises(TwilioAPIError) as denied:
                await send_sms(wrong, to=CALLEE, from_=FROM, body="x")
        assert (denied.value.code, denied.value.status) == (20003, 401)


async def test_429_is_retried_after_retry_after_and_succeeds() -> None:
    async with twilio() as (emulator, client):
        emulator.inject(status=429, code=20429, retry_after=0.2, times=2)
        started = trio.current_time()
        output = await send_sms(client, to=CALLEE, from_=FROM, body="x")
        assert trio.current_time() - started >= 0.4
    assert [r.status for r in emulator.requests] == [429, 429, 201]
    assert output["sid"] in emulator.messages


async def test_a_post_whose_response_is_lost_is_not_sent_twice() -> None:
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        emulator.delay_after_accept(3)
        credentials = Credentials(emulator.account_sid, emulator.auth_token)
        async with TwilioClient(credentials, base_url=emulator.base_url, timeout=0.5) as client:
            with pytest.raises(TwilioAPIError, match="not retried"):
                await send_sms(client, to=CALLEE, from_=FROM, body="once")
        posts = [r for r in emulator.requests if r.method == "POST"]
        assert len(emulator.messages) == 1
        assert len(posts) == 1


async def test_custom_action_reaches_any_path_with_the_connection_auth() -> None:
    async with twilio() as (_emulator, client):
        output = await send_sms(client, to=CALLEE, from_=FROM, body="x")
        fetched = await client.request("GET", f"Messages/{output['sid']}.json")
        assert fetched["sid"] == output["sid"] and fetched["body"] == "x"
        with pytest.raises(TwilioAPIError) as missing:
            await client.request("GET", "Messages/SM" + "0" * 32 + ".json")
        assert missing.value.status == 404


async def test_api_key_credentials_are_accepted() -> None:
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        key = Credentials(emulator.account_sid, emulator.api_key_secret, emulator.api_key_sid)
        async with TwilioClient(key, base_url=emulator.base_url) as client:
            output = await send_sms(client, to=CALLEE, from_=FROM, body="via key")
    assert emulator.requests[-1].username == emulator.api_key_sid
    assert output["body"] == "via key"
