"""Webhooks and triggers on an in-process server, signed by the official twilio library."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from twilio.request_validator import RequestValidator

from engine.component import triggers
from engine.errors import ConfigError
from engine.server import ServerConfig, Triggers, VoiceServer
from engine.testing import ring
from pipelines.echo import create as echo
from pipelines.turn_echo import create as turn_echo

TOKEN = "webhook-test-token"
ACCOUNT = "AC" + "1" * 32
CALL = "CA" + "2" * 32


@asynccontextmanager
async def running(events: list[tuple[str, dict[str, Any]]]) -> AsyncIterator[VoiceServer]:
    async def inbound(output: dict[str, Any]) -> None:
        events.append(("inboundCall", output))

    async def whatsapp(output: dict[str, Any]) -> None:
        events.append(("newWhatsappMessage", output))

    server = VoiceServer(
        ServerConfig(
            stage_factory=echo,
            auth_token=TOKEN,
            port=0,
            triggers=Triggers(inbound_call=inbound, whatsapp_message=whatsapp),
        )
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        server.shutdown()


async def post(url: str, params: dict[str, str], signature: str | None) -> httpx.Response:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=params, headers=headers)


VOICE = {
    "CallSid": CALL,
    "AccountSid": ACCOUNT,
    "From": "+15017122661",
    "To": "+14155552671",
    "CallStatus": "ringing",
    "ApiVersion": "2010-04-01",
    "Direction": "inbound",
}
STATUS = {**VOICE, "CallStatus": "completed", "SequenceNumber": "3", "CallDuration": "7"}
WHATSAPP = {
    "MessageSid": "SM" + "3" * 32,
    "SmsSid": "SM" + "3" * 32,
    "AccountSid": ACCOUNT,
    "From": "whatsapp:+15017122661",
    "To": "whatsapp:+14155552671",
    "Body": "Hola 👋 & <bienvenidos>",
    "NumMedia": "0",
    "ProfileName": "Ana",
    "WaId": "15017122661",
}


@pytest.mark.parametrize(
    ("path", "params", "ok_status"),
    [
        ("/twilio/voice", VOICE, 200),
        ("/twilio/voice?pipeline=echo", VOICE, 200),
        ("/twilio/status", STATUS, 204),
        ("/twilio/whatsapp", WHATSAPP, 200),
    ],
)
async def test_signed_webhooks_are_accepted_and_tampered_ones_refused(
    path: str, params: dict[str, str], ok_status: int
) -> None:
    validator = RequestValidator(TOKEN)
    async with running([]) as server:
        url = f"{server.public_url}{path}"
        good = validator.compute_signature(url, params)
        assert (await post(url, params, good)).status_code == ok_status
        changed = {**params, "From": params["From"].replace("1", "9", 1)}
        assert (await post(url, changed, good)).status_code == 403
        extra = {**params, "Extra": "1"}
        assert (await post(url, extra, good)).status_code == 403
        other_url = f"{server.public_url}{path}{'&' if '?' in path else '?'}x=1"
        assert (await post(other_url, params, good)).status_code == 403
        assert (await post(url, params, None)).status_code == 403
        wrong_key = RequestValidator("another-token").compute_signature(url, params)
        assert (await post(url, params, wrong_key)).status_code == 403


async def test_inbound_call_trigger_gets_the_output_object() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    async with running(events) as server:
        url = f"{server.public_url}/twilio/voice"
        response = await post(url, VOICE, RequestValidator(TOKEN).compute_signature(url, VOICE))
        assert response.headers["content-type"].startswith("text/xml")
        stream = ET.fromstring(response.text).find("./Connect/Stream")
        assert stream is not None and stream.get("url", "").startswith("ws://")
        await trio.sleep(0.05)
    assert events == [
        (
            "inboundCall",
            {
                "callSid": CALL,
                "from": "+15017122661",
                "to": "+14155552671",
                "direction": "inbound",
                "accountSid": ACCOUNT,
                "callStatus": "ringing",
            },
        )
    ]


async def test_outbound_answers_do_not_fire_the_inbound_trigger() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    params = {**VOICE, "Direction": "outbound-api"}
    async with running(events) as server:
        url = f"{server.public_url}/twilio/voice?pipeline=echo"
        response = await post(url, params, RequestValidator(TOKEN).compute_signature(url, params))
        assert response.status_code == 200
        names = [p.get("name") for p in ET.fromstring(response.text).iter("Parameter")]
        assert "pipeline" in names and "token" in names
        await trio.sleep(0.05)
    assert events == []


async def test_whatsapp_trigger_gets_every_field_and_twilio_gets_empty_twiml() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    async with running(events) as server:
        url = f"{server.public_url}/twilio/whatsapp"
        response = await post(
            url, WHATSAPP, RequestValidator(TOKEN).compute_signature(url, WHATSAPP)
        )
        await trio.sleep(0.05)
    assert response.status_code == 200
    root = ET.fromstring(response.text)
    assert root.tag == "Response" and len(root) == 0
    assert events == [("newWhatsappMessage", WHATSAPP)]


async def test_status_callbacks_out_of_order_and_duplicated() -> None:
    async with running([]) as server:
        url = f"{server.public_url}/twilio/status"
        validator = RequestValidator(TOKEN)
        sequence = [
            ("0", "initiated"),
            ("2", "in-progress"),
            ("1", "ringing"),
            ("2", "in-progress"),
        ]
        for number, status in sequence:
            params = {**VOICE, "CallStatus": status, "SequenceNumber": number}
            assert (
                await post(url, params, validator.compute_signature(url, params))
            ).status_code == 204
        latest = server.status_board.latest(CALL)
        assert latest is not None and (latest.status, latest.sequence) == ("in-progress", 2)
        final = {**STATUS}
        await post(url, final, validator.compute_signature(url, final))
        late = {**VOICE, "CallStatus": "ringing", "SequenceNumber": "9"}
        await post(url, late, validator.compute_signature(url, late))
        latest = server.status_board.latest(CALL)
        assert latest is not None and latest.status == "completed" and latest.duration == 7


async def test_a_pipeline_the_server_does_not_serve_is_refused_not_imported() -> None:
    validator = RequestValidator(TOKEN)
    async with running([]) as server:
        for pipeline, status in (("echo", 200), ("os:abort", 400), ("builtins:print", 400)):
            url = f"{server.public_url}/twilio/voice?pipeline={pipeline}"
            response = await post(url, VOICE, validator.compute_signature(url, VOICE))
            assert response.status_code == status, pipeline
            if status == 400:
                assert "not served here" in response.text


async def test_webhook_bodies_are_bounded_and_unsigned_ones_are_not_read() -> None:
    validator = RequestValidator(TOKEN)
    async with running([]) as server:
        url = f"{server.public_url}/twilio/status"
        big = {**STATUS, "Padding": "x" * 100_000}
        # Signed or not, a body past the limit is refused at the front door, read no further.
        assert (await post(url, big, validator.compute_signature(url, big))).status_code == 413
        assert (await post(url, big, None)).status_code == 413
        unsigned = await post(url, STATUS, None)
        assert unsigned.status_code == 403
        assert "missing X-Twilio-Signature" in unsigned.text
        # A normal, signed status callback still goes through.
        assert (
            await post(url, STATUS, validator.compute_signature(url, STATUS))
        ).status_code == 204


SMS = {
    "MessageSid": "SM" + "4" * 32,
    "SmsSid": "SM" + "4" * 32,
    "AccountSid": ACCOUNT,
    "From": "+15017122661",
    "To": "+14155552671",
    "Body": "an SMS, not a WhatsApp message",
    "NumMedia": "0",
    "NumSegments": "1",
}


async def test_an_sms_posted_to_the_whatsapp_webhook_fires_no_trigger() -> None:
    # Defect 7: newWhatsappMessage fired for any POST to the route, an SMS included.
    events: list[tuple[str, dict[str, Any]]] = []
    validator = RequestValidator(TOKEN)
    async with running(events) as server:
        url = f"{server.public_url}/twilio/whatsapp"
        sms = await post(url, SMS, validator.compute_signature(url, SMS))
        whatsapp = await post(url, WHATSAPP, validator.compute_signature(url, WHATSAPP))
        await trio.sleep(0.05)
    assert sms.status_code == whatsapp.status_code == 200  # Twilio gets its empty TwiML
    assert len(ET.fromstring(sms.text)) == 0
    assert events == [("newWhatsappMessage", WHATSAPP)]  # the WhatsApp message only


async def test_the_inbound_call_trigger_runs_its_sub_workflow() -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    async def handler(name: str, output: dict[str, Any]) -> None:
        events.append((name, output))

    inbound = {
        "label": "Inbound Voice Call",
        "name": "inboundCall",
        "parameters": {"subWorkflow": "echo"},
        "type": "twilio/v1/inboundCall",
    }
    config = ServerConfig(
        stage_factory=turn_echo,
        auth_token=TOKEN,
        port=0,
        triggers=triggers(inbound, {"type": "twilio/v1/newWhatsappMessage"}, handler=handler),
    )
    server = VoiceServer(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        assert server.public_url is not None
        call = await ring(server.public_url, TOKEN, from_number="+15017122661")
        # An outbound call's own pipeline (makeCall's ?pipeline=) is kept.
        url = f"{server.public_url}/twilio/voice?pipeline=turn-echo"
        outbound = {**VOICE, "Direction": "outbound-api"}
        answer = await post(url, outbound, RequestValidator(TOKEN).compute_signature(url, outbound))
        await trio.sleep(0.05)
        server.shutdown()
    assert call.connect.parameters["pipeline"] == "echo"
    pipelines = [p.get("value") for p in ET.fromstring(answer.text).iter("Parameter")]
    assert "turn-echo" in pipelines and "echo" not in pipelines
    assert events == [
        (
            "inboundCall",
            {
                "callSid": call.call_sid,
                "from": "+15017122661",
                "to": call.to_number,
                "direction": "inbound",
                "accountSid": call.account_sid,
                "callStatus": "ringing",
            },
        )
    ]


def test_a_sub_workflow_the_server_does_not_serve_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="mine:create"):
        ServerConfig(
            stage_factory=turn_echo,
            auth_token=TOKEN,
            triggers=Triggers(sub_workflow="mine:create"),
        )
