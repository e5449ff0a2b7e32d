"""The component's Python entry (engine.component) against the Twilio emulator: the
documentation's task objects in, its exact output objects out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from conftest import SPEC_PATH
from engine.component import Component, execute
from engine.control.messages import send_sms
from engine.control.rest import Credentials, TwilioClient
from engine.errors import InvalidInput, TwilioAPIError
from engine.server import ServerConfig, VoiceServer
from engine.testing import CalleeBehaviour, TwilioEmulator, open_twilio_emulator
from pipelines.turn_echo import create as turn_echo

FROM = "+15005550006"
CALLEE = "+14155552671"
TEMPLATE = "HX" + "b" * 32

# The seed documentation's output objects: name → JSON type (None allowed where Twilio
# sends null: price, errorMessage, errorCode… on a message not yet billed or failed).
MESSAGE_SHAPE: dict[str, Any] = {
    "body": str,
    "numSegments": str,
    "direction": str,
    "from": {"rawNumber": str},
    "to": str,
    "dateUpdated": {"dateTime": str, "zoneId": str},
    "price": str,
    "errorMessage": str,
    "uri": str,
    "accountSid": str,
    "numMedia": str,
    "status": str,
    "messagingServiceSid": str,
    "sid": str,
    "dateSent": {"dateTime": str, "zoneId": str},
    "dateCreated": {"dateTime": str, "zoneId": str},
    "errorCode": int,
    "currency": {"currencyCode": str, "defaultFractionDigits": int, "numericCode": int},
    "apiVersion": str,
    "subresourceUris": dict,
}
CALL_SHAPE: dict[str, Any] = {"callSid": str, "status": str, "duration": int, "direction": str}


def check_shape(value: Any, shape: Any, path: str = "") -> None:
    """``value`` has exactly ``shape``'s keys, each of its type (or null)."""
    if isinstance(shape, dict):
        assert isinstance(value, dict), path
        assert set(value) == set(shape), (path, set(value) ^ set(shape))
        for key, sub in shape.items():
            if value[key] is not None:
                check_shape(value[key], sub, f"{path}.{key}")
    else:
        assert isinstance(value, shape) and not isinstance(value, bool), (path, value)


def task(action: str, **parameters: Any) -> dict[str, Any]:
    return {
        "label": action,
        "name": action,
        "parameters": parameters,
        "type": f"twilio/v1/{action}",
    }


@asynccontextmanager
async def twilio() -> AsyncIterator[tuple[TwilioEmulator, Component]]:
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        connection = {"username": emulator.account_sid, "password": emulator.auth_token}
        yield emulator, Component(connection, base_url=emulator.base_url, port=0)


async def test_the_documented_message_tasks_give_the_documented_output() -> None:
    async with twilio() as (emulator, component):
        sms = await component.execute(task("sendSMS", To=CALLEE, From=FROM, Body="Booked ✔"))
        check_shape(sms, MESSAGE_SHAPE)
        assert sms["from"] == {"rawNumber": FROM} and sms["body"] == "Booked ✔"
        assert dict(emulator.messages[sms["sid"]].form) == {
            "To": CALLEE,
            "From": FROM,
            "Body": "Booked ✔",
        }

        template = await component.execute(
            task(
                "sendWhatsAppMessage",
                To=CALLEE,
                From=FROM,
                useTemplate=True,
                ContentSid=TEMPLATE,
                ContentVariables={"1": "Ana", "2": "3pm"},
                Body="",
            )
        )
        check_shape(template, MESSAGE_SHAPE)
        assert dict(emulator.messages[template["sid"]].form) == {
            "To": "whatsapp:" + CALLEE,
            "From": "whatsapp:" + FROM,
            "ContentSid": TEMPLATE,
            "ContentVariables": json.dumps({"1": "Ana", "2": "3pm"}),
        }

        emulator.open_whatsapp_session("whatsapp:" + CALLEE)
        text = await component.execute(
            task(
                "sendWhatsAppMessage",
                To=CALLEE,
                From=FROM,
                useTemplate=False,
                ContentSid="",
                ContentVariables={},
                Body="Hola",
            )
        )
        check_shape(text, MESSAGE_SHAPE)
        assert text["to"] == "whatsapp:" + CALLEE and text["body"] == "Hola"

        fetched = await component.execute(
            task("customAction", method="GET", path=f"Messages/{sms['sid']}.json")
        )
        assert fetched["sid"] == sms["sid"] and fetched["num_segments"] == "1"  # Twilio's JSON


async def test_the_custom_action_posts_form_fields_and_reports_twilios_errors() -> None:
    async with twilio() as (emulator, component):
        created = await component.request(
            "POST", "Messages.json", {"To": CALLEE, "From": FROM, "Body": "raw"}
        )
        assert emulator.messages[created["sid"]]["body"] == "raw"
        with pytest.raises(TwilioAPIError) as missing:
            await component.execute(
                task("customAction", method="GET", path="Messages/SM" + "0" * 32 + ".json")
            )
        assert (missing.value.code, missing.value.status) == (20404, 404)
        # The connection's credentials never leave for another host.
        before = len(emulator.requests)
        with pytest.raises(InvalidInput):
            await component.request("GET", "//evil.example/steal")
        async with component.client() as client:
            with pytest.raises(InvalidInput):
                await client.request("GET", "https://evil.example/steal")
        assert len(emulator.requests) == before


async def test_make_call_task_runs_on_a_server_of_its_own() -> None:
    async with twilio() as (emulator, component):
        emulator.callee(CALLEE, CalleeBehaviour(hang_up_after=1.0))
        seen: list[dict[str, Any]] = []
        output = await component.execute(
            task("makeCall", To=CALLEE, From=FROM, subWorkflow="echo", timeout=15, maxDuration=1),
            on_output=seen.append,
        )
        call = emulator.calls[output["callSid"]]
    check_shape(output, CALL_SHAPE)
    assert output["status"] == "completed" and output["direction"] == "outbound-api"
    assert seen == [output]
    # timeout is seconds, maxDuration minutes: Twilio gets Timeout=15 and TimeLimit=60.
    assert call.param("Timeout") == "15" and call.param("TimeLimit") == "60"
    assert str(call.param("Url")).endswith("/twilio/voice?pipeline=echo")
    assert call.record is not None and call.record.frames_sent > 0  # the pipeline ran


@asynccontextmanager
async def voice_server(emulator: TwilioEmulator) -> AsyncIterator[VoiceServer]:
    server = VoiceServer(
        ServerConfig(stage_factory=turn_echo, auth_token=emulator.auth_token, port=0)
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        server.shutdown()


async def test_make_call_task_runs_on_the_server_given() -> None:
    async with twilio() as (emulator, component), voice_server(emulator) as server:
        emulator.callee(CALLEE, CalleeBehaviour(hang_up_after=0.5))
        component.server = server
        output = await component.execute(
            task("makeCall", To=CALLEE, From=FROM, subWorkflow="turn-echo")
        )
    check_shape(output, CALL_SHAPE)
    assert output["status"] == "completed"
    assert emulator.calls[output["callSid"]].param("Url") == (
        f"{server.public_url}/twilio/voice?pipeline=turn-echo"
    )


async def test_make_call_refuses_a_pipeline_the_server_does_not_serve() -> None:
    # Defect 1: this returned {"status": "completed", "duration": 0} after a call that could
    # never run its pipeline (the webhook refused it); now nothing is placed.
    async with (
        open_twilio_emulator(spec_path=SPEC_PATH) as emulator,
        voice_server(emulator) as server,
    ):
        credentials = Credentials(emulator.account_sid, emulator.auth_token)
        async with TwilioClient(credentials, base_url=emulator.base_url) as client:
            with pytest.raises(InvalidInput) as info:
                await server.make_call(
                    client, to=CALLEE, from_=FROM, pipeline="recording_stage:create"
                )
        assert info.value.field == "subWorkflow"
        assert "recording_stage:create" in str(info.value)
        assert emulator.requests == [] and emulator.calls == {}


@pytest.mark.parametrize(
    ("subworkflow", "served_by_given_server"),
    [("no_such_module:create", False), ("nonsense", False), ("mypackage:create", True)],
)
async def test_make_call_task_with_a_pipeline_that_cannot_run_sends_nothing(
    subworkflow: str, served_by_given_server: bool
) -> None:
    async with twilio() as (emulator, component), voice_server(emulator) as server:
        if served_by_given_server:
            component.server = server
        with pytest.raises(InvalidInput) as info:
            await component.execute(task("makeCall", To=CALLEE, From=FROM, subWorkflow=subworkflow))
        assert info.value.field == "subWorkflow"
        assert emulator.requests == []


@pytest.mark.parametrize(
    "sender",
    ["VoiceEngine", "55555", "whatsapp:" + FROM],
)
async def test_sms_from_a_sender_id_short_code_or_channel_address(sender: str) -> None:
    # Defect 4: all three were refused as "not an E.164 number" before any request.
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        to = "whatsapp:" + CALLEE if sender.startswith("whatsapp:") else CALLEE
        emulator.open_whatsapp_session(to)
        credentials = Credentials(emulator.account_sid, emulator.auth_token)
        async with TwilioClient(credentials, base_url=emulator.base_url) as client:
            output = await send_sms(client, to=to, from_=sender, body="Your code is 1234")
        assert output["from"] == {"rawNumber": sender}
        assert dict(emulator.messages[output["sid"]].form)["From"] == sender


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (task("sendSMS", To=CALLEE, From=FROM), "Body"),
        (task("sendSMS", To=CALLEE, From=FROM, Body=["Hi"]), "Body"),
        (task("sendWhatsAppMessage", To=CALLEE, From=FROM, Body="Hi"), "useTemplate"),
        (
            task(
                "sendWhatsAppMessage",
                To=CALLEE,
                From=FROM,
                useTemplate=False,
                Body="Hi",
                ContentVariables={"1": "Ana"},
            ),
            "ContentVariables",
        ),
        (task("makeCall", To=CALLEE, From=FROM, subWorkflow="echo", timeout="20"), "timeout"),
        (task("makeCall", To=CALLEE, From=FROM, subWorkflow="echo", maxDuration=-1), "maxDuration"),
        (
            {
                **task("sendSMS", To=CALLEE, From=FROM, Body="x"),
                "connection": {"username": "x", "password": "p"},
            },
            "connection.username",
        ),
    ],
)
async def test_bad_tasks_send_nothing(bad: dict[str, Any], field: str) -> None:
    async with twilio() as (emulator, component):
        with pytest.raises(InvalidInput) as info:
            await component.execute(bad)
        assert info.value.field == field
        assert emulator.requests == []


async def test_the_connection_comes_from_the_task_the_component_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        sms = task("sendSMS", To=CALLEE, From=FROM, Body="x")
        monkeypatch.setenv("TWILIO_API_BASE_URL", emulator.base_url)
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", emulator.account_sid)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", emulator.auth_token)
        monkeypatch.delenv("TWILIO_API_KEY", raising=False)
        await execute(sms)  # the environment
        key = {
            "username": emulator.api_key_sid,
            "password": emulator.api_key_secret,
            "accountSid": emulator.account_sid,
        }
        await execute(sms, key)  # the component's connection: an API key
        wrong = {"username": emulator.account_sid, "password": "wrong"}
        await execute({**sms, "connection": key}, wrong)  # the task's own wins
        with pytest.raises(TwilioAPIError) as denied:
            await execute(sms, wrong)
        assert denied.value.code == 20003
    usernames = [request.username for request in emulator.requests]
    assert usernames == [
        emulator.account_sid,
        emulator.api_key_sid,
        emulator.api_key_sid,
        emulator.account_sid,
    ]
