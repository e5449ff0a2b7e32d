"""Task objects as the component documentation writes them, and connections (sans-IO)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.control.credentials import Credentials
from engine.control.tasks import (
    CallRequest,
    MessageRequest,
    RestRequest,
    TriggerSpec,
    parse_task,
    parse_trigger,
)
from engine.errors import ConfigError, InvalidInput

ACCOUNT = "AC" + "a" * 32
KEY = "SK" + "b" * 32
TEMPLATE = "HX" + "c" * 32


def sms(**parameters: Any) -> dict[str, Any]:
    return {
        "label": "Send SMS",
        "name": "sendSMS",
        "parameters": {"To": "+14155552671", "From": "+15005550006", "Body": "Hi", **parameters},
        "type": "twilio/v1/sendSMS",
    }


def whatsapp(**parameters: Any) -> dict[str, Any]:
    return {
        "label": "Send WhatsApp Message",
        "name": "sendWhatsAppMessage",
        "parameters": {
            "To": "+14155552671",
            "From": "+15005550006",
            "useTemplate": False,
            "ContentSid": "",
            "ContentVariables": {},
            "Body": "Hola",
            **parameters,
        },
        "type": "twilio/v1/sendWhatsAppMessage",
    }


def call(**parameters: Any) -> dict[str, Any]:
    return {
        "label": "Make Outbound Call",
        "name": "makeCall",
        "parameters": {
            "To": "+14155552671",
            "From": "+15005550006",
            "subWorkflow": "turn-echo",
            "timeout": 30,
            "maxDuration": 5,
            **parameters,
        },
        "type": "twilio/v1/makeCall",
    }


def test_the_documented_objects_with_real_values() -> None:
    assert parse_task(sms()).request == MessageRequest(
        {"To": "+14155552671", "From": "+15005550006", "Body": "Hi"}
    )
    assert parse_task(whatsapp()).request == MessageRequest(
        {"To": "whatsapp:+14155552671", "From": "whatsapp:+15005550006", "Body": "Hola"}
    )
    template = whatsapp(useTemplate=True, ContentSid=TEMPLATE, ContentVariables={"1": "Ana"})
    template["parameters"]["Body"] = ""
    assert parse_task(template).request == MessageRequest(
        {
            "To": "whatsapp:+14155552671",
            "From": "whatsapp:+15005550006",
            "ContentSid": TEMPLATE,
            "ContentVariables": '{"1": "Ana"}',
        }
    )
    parsed = parse_task(call())
    assert parsed.action == "makeCall"
    assert parsed.request == CallRequest("+14155552671", "+15005550006", "turn-echo", 30, 5.0)
    assert parsed.connection is None


def test_the_custom_action() -> None:
    task = {
        "type": "twilio/v1/customAction",
        "parameters": {"method": "get", "path": "Calls.json", "params": {"PageSize": 20}},
    }
    assert parse_task(task).request == RestRequest("GET", "Calls.json", {"PageSize": "20"})
    as_json = {
        "type": "twilio/v1/customAction",
        "parameters": {"method": "POST", "path": "/v1/X", "params": {"a": [1]}, "json": True},
    }
    assert parse_task(as_json).request == RestRequest("POST", "/v1/X", {}, {"a": [1]})


@pytest.mark.parametrize(
    ("task", "field"),
    [
        # The envelope.
        ("sendSMS", "task"),
        ([], "task"),
        ({"parameters": {}}, "type"),
        ({**sms(), "type": "twilio/v1/sendFax"}, "type"),
        ({**sms(), "type": "sendSMS"}, "type"),
        ({**sms(), "type": "twilio/v1/inboundCall"}, "type"),  # a trigger is not an action
        ({**sms(), "parameters": ["To"]}, "parameters"),
        ({**sms(), "label": 3}, "label"),
        ({**sms(), "extra": 1}, "extra"),
        # sendSMS: required, typed, valid; unknown names refused (a typo is not ignored).
        (sms(To=None), "To"),
        (sms(From=""), "From"),
        (sms(Body=None), "Body"),
        (sms(Body=12), "Body"),
        (sms(To="4155552671"), "To"),
        (sms(to="+14155552671"), "to"),
        # sendWhatsAppMessage.
        (whatsapp(useTemplate=None), "useTemplate"),
        (whatsapp(useTemplate="true"), "useTemplate"),
        (whatsapp(useTemplate=True), "ContentSid"),
        (whatsapp(useTemplate=True, ContentSid="HX1", Body=""), "ContentSid"),
        (whatsapp(useTemplate=True, ContentSid=TEMPLATE), "Body"),
        (whatsapp(ContentVariables={"1": "Ana"}), "ContentVariables"),
        (whatsapp(ContentVariables='{"1": "Ana"}'), "ContentVariables"),
        (whatsapp(Body=""), "Body"),
        # makeCall: timeout in whole seconds, maxDuration in minutes.
        (call(subWorkflow=""), "subWorkflow"),
        (call(subWorkflow=None), "subWorkflow"),
        (call(timeout="30"), "timeout"),
        (call(timeout=0), "timeout"),
        (call(timeout=1.5), "timeout"),
        (call(maxDuration=0), "maxDuration"),
        (call(maxDuration="5"), "maxDuration"),
        (call(From="+1555"), "From"),
        # customAction.
        ({"type": "twilio/v1/customAction", "parameters": {}}, "path"),
        ({"type": "twilio/v1/customAction", "parameters": {"path": "https://x.example"}}, "path"),
        (
            {"type": "twilio/v1/customAction", "parameters": {"path": "Calls.json", "json": 1}},
            "json",
        ),
        (
            {"type": "twilio/v1/customAction", "parameters": {"method": "BREW", "path": "x"}},
            "method",
        ),
    ],
)
def test_bad_tasks_name_their_parameter(task: object, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_task(task)
    assert info.value.field == field


def test_optional_parameters_may_be_left_out() -> None:
    task = call()
    del task["parameters"]["timeout"], task["parameters"]["maxDuration"]
    task.pop("label"), task.pop("name")
    assert parse_task(task).request == CallRequest("+14155552671", "+15005550006", "turn-echo")


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (
            {
                "name": "inboundCall",
                "parameters": {"subWorkflow": "local"},
                "type": "twilio/v1/inboundCall",
            },
            TriggerSpec("inboundCall", "local"),
        ),
        ({"type": "twilio/v1/newWhatsappMessage"}, TriggerSpec("newWhatsappMessage")),
        ({"type": "twilio/v1/inboundCall", "parameters": {}}, "subWorkflow"),
        ({"type": "twilio/v1/newWhatsappMessage", "parameters": {"x": 1}}, "x"),
        ({"type": "twilio/v1/sendSMS"}, "type"),
    ],
)
def test_trigger_objects(task: object, expected: object) -> None:
    if isinstance(expected, str):
        with pytest.raises(InvalidInput) as info:
            parse_trigger(task)
        assert info.value.field == expected
    else:
        assert parse_trigger(task) == expected


@pytest.mark.parametrize(
    ("connection", "environ", "expected"),
    [
        ({"username": ACCOUNT, "password": "tok"}, {}, Credentials(ACCOUNT, "tok")),
        (
            {"username": KEY, "password": "secret", "accountSid": ACCOUNT},
            {},
            Credentials(ACCOUNT, "secret", KEY),
        ),
        (
            {"username": KEY, "password": "secret"},
            {"TWILIO_ACCOUNT_SID": ACCOUNT},
            Credentials(ACCOUNT, "secret", KEY),
        ),
        ({"username": KEY, "password": "secret"}, {}, "connection.accountSid"),
        ({"username": ACCOUNT}, {}, "connection.password"),
        ({"password": "tok"}, {}, "connection.username"),
        ({"username": "bob", "password": "tok"}, {}, "connection.username"),
        (
            {"username": ACCOUNT, "password": "tok", "accountSid": "AC" + "d" * 32},
            {},
            "connection.accountSid",
        ),
        ({"username": ACCOUNT, "password": "tok", "token": "x"}, {}, "connection.token"),
        ("AC:tok", {}, "connection"),
    ],
)
def test_connection_objects(
    connection: object, environ: dict[str, str], expected: Credentials | str
) -> None:
    if isinstance(expected, str):
        with pytest.raises(InvalidInput) as info:
            Credentials.from_connection(connection, environ)
        assert info.value.field == expected
    else:
        assert Credentials.from_connection(connection, environ) == expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": "t"}, Credentials(ACCOUNT, "t")),
        (
            {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_API_KEY": KEY, "TWILIO_API_SECRET": "s"},
            Credentials(ACCOUNT, "s", KEY),
        ),
        ({"TWILIO_AUTH_TOKEN": "t"}, None),
        ({"TWILIO_ACCOUNT_SID": ACCOUNT}, None),
    ],
)
def test_connection_from_the_environment(
    environ: dict[str, str], expected: Credentials | None
) -> None:
    if expected is None:
        with pytest.raises(ConfigError):
            Credentials.from_env(environ)
    else:
        assert Credentials.from_env(environ) == expected


def test_secrets_stay_out_of_reprs() -> None:
    assert "tok" not in repr(Credentials.from_connection({"username": ACCOUNT, "password": "tok"}))
