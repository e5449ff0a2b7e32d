"""The component's parameter checks (sans-IO), as tables of cases."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from engine.control import validation
from engine.errors import InvalidInput

REFUSED = object()


def check(function: Callable[..., Any], value: object, expected: object, field: str) -> None:
    if expected is REFUSED:
        with pytest.raises(InvalidInput) as info:
            function(value)
        assert info.value.field == field
        assert str(info.value).startswith(f"{field}: ")
    else:
        assert function(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The documentation allows all of these as sendSMS From (issue 13, defect 4).
        ("+15005550006", "+15005550006"),
        (" +15005550006 ", "+15005550006"),
        ("VoiceEngine", "VoiceEngine"),  # alphanumeric sender ID, 11 characters
        ("Acme 24", "Acme 24"),
        ("55555", "55555"),  # short code
        ("894546", "894546"),
        ("whatsapp:+14155238886", "whatsapp:+14155238886"),  # channel address
        ("messenger:1234567890", "messenger:1234567890"),
        ("sim:HS" + "0" * 32, "sim:HS" + "0" * 32),
        # ... and none of these.
        ("VoiceEngine1", REFUSED),  # 12 characters
        ("12", REFUSED),
        ("15005550006", REFUSED),  # a number without its +
        ("+1555", REFUSED),
        ("Acme!", REFUSED),
        ("whatsapp:+1555", REFUSED),
        ("whatsapp:", REFUSED),
        ("", REFUSED),
        (None, REFUSED),
        (15005550006, REFUSED),
    ],
)
def test_sms_sender(value: object, expected: object) -> None:
    check(validation.sms_sender, value, expected, "From")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+14155552671", "+14155552671"),
        ("whatsapp:+14155552671", "whatsapp:+14155552671"),
        ("VoiceEngine", REFUSED),  # a sender ID cannot receive
        ("55555", REFUSED),
        ("+1555", REFUSED),
        (["+14155552671"], REFUSED),
    ],
)
def test_sms_recipient(value: object, expected: object) -> None:
    check(validation.sms_recipient, value, expected, "To")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+14155552671", "whatsapp:+14155552671"),
        ("whatsapp:+14155552671", "whatsapp:+14155552671"),
        ("whatsapp:14155552671", REFUSED),
        ("Acme", REFUSED),
        ("", REFUSED),
    ],
)
def test_whatsapp_address(value: object, expected: object) -> None:
    check(lambda v: validation.whatsapp_address(v, "To"), value, expected, "To")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Hi", "Hi"),
        ("x" * 1600, "x" * 1600),
        ("x" * 1601, REFUSED),
        ("", REFUSED),
        (None, REFUSED),
        (42, REFUSED),
    ],
)
def test_message_body(value: object, expected: object) -> None:
    check(validation.message_body, value, expected, "Body")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ({}, None),
        ({"1": "Ana", "2": 3}, json.dumps({"1": "Ana", "2": 3})),
        ({"name": "Zoë"}, '{"name": "Zoë"}'),
        ('{"1": "Ana"}', REFUSED),  # an object, not its JSON text
        (["Ana"], REFUSED),
        ({"1": {"nested": 1}}, REFUSED),
        ({"1": True}, REFUSED),
        ({"": "x"}, REFUSED),
    ],
)
def test_content_variables(value: object, expected: object) -> None:
    if expected is REFUSED:
        with pytest.raises(InvalidInput) as info:
            validation.content_variables(value)
        assert info.value.field.startswith("ContentVariables")
    else:
        assert validation.content_variables(value) == expected


TEMPLATE = "HX" + "b" * 32


@pytest.mark.parametrize(
    ("use_template", "body", "sid", "variables", "expected"),
    [
        (False, "Hola", None, None, {"Body": "Hola"}),
        (False, "Hola", "", {}, {"Body": "Hola"}),  # the documentation's empty fields
        (True, "", TEMPLATE, {}, {"ContentSid": TEMPLATE}),
        (
            True,
            None,
            TEMPLATE,
            {"1": "Ana"},
            {"ContentSid": TEMPLATE, "ContentVariables": '{"1": "Ana"}'},
        ),
        # Defect 3: variables with free text were dropped; now they are refused.
        (False, "Hola", None, {"1": "Ana"}, "ContentVariables"),
        (False, "Hola", TEMPLATE, None, "ContentSid"),
        (True, "Hola", TEMPLATE, None, "Body"),
        (True, None, None, None, "ContentSid"),
        (True, None, "HX123", None, "ContentSid"),
        (False, None, None, None, "Body"),
        (None, "Hola", None, None, "useTemplate"),
        ("false", "Hola", None, None, "useTemplate"),
        (0, "Hola", None, None, "useTemplate"),
    ],
)
def test_whatsapp_content(
    use_template: object, body: object, sid: object, variables: object, expected: object
) -> None:
    if isinstance(expected, str):
        with pytest.raises(InvalidInput) as info:
            validation.whatsapp_content(use_template, body, sid, variables)
        assert info.value.field == expected
    else:
        assert validation.whatsapp_content(use_template, body, sid, variables) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (1, 1),
        (30, 30),
        (600, 600),
        (30.0, 30),
        (0, REFUSED),
        (601, REFUSED),
        (2.5, REFUSED),
        ("30", REFUSED),
        (True, REFUSED),
        (float("nan"), REFUSED),
    ],
)
def test_ring_timeout_is_whole_seconds(value: object, expected: object) -> None:
    check(validation.ring_timeout, value, expected, "timeout")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (1, 1.0),
        (5, 5.0),
        (0.5, 0.5),
        (1440, 1440.0),
        (0, REFUSED),
        (-1, REFUSED),
        (1441, REFUSED),
        ("5", REFUSED),
        (False, REFUSED),
        (float("inf"), REFUSED),
    ],
)
def test_max_duration_is_minutes(value: object, expected: object) -> None:
    check(validation.max_duration, value, expected, "maxDuration")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("turn-echo", "turn-echo"),
        ("local", "local"),
        ("mypackage.agent:create", "mypackage.agent:create"),
        ("", REFUSED),
        (None, REFUSED),
        ("a b", REFUSED),
        ("mod:", REFUSED),
        ("mod:fn:x", REFUSED),
        ("../etc", REFUSED),
        (7, REFUSED),
    ],
)
def test_pipeline_name(value: object, expected: object) -> None:
    check(validation.pipeline_name, value, expected, "subWorkflow")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("GET", "GET"),
        ("post", "POST"),
        ("DELETE", "DELETE"),
        ("TRACE", REFUSED),
        ("", REFUSED),
        (None, REFUSED),
    ],
)
def test_http_method(value: object, expected: object) -> None:
    check(validation.http_method, value, expected, "method")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Messages.json", "Messages.json"),
        ("Calls/CA1.json?PageSize=2", "Calls/CA1.json?PageSize=2"),
        ("/2010-04-01/Accounts.json", "/2010-04-01/Accounts.json"),
        # The connection's credentials go to the API's host only.
        ("https://evil.example/x", REFUSED),
        ("//evil.example/x", REFUSED),
        ("/\\evil.example/x", REFUSED),
        ("Messages.json extra", REFUSED),
        ("Messages\n.json", REFUSED),
        ("", REFUSED),
    ],
)
def test_rest_path(value: object, expected: object) -> None:
    check(validation.rest_path, value, expected, "path")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {}),
        ({"PageSize": 2, "To": "+1", "Flag": True}, {"PageSize": "2", "To": "+1", "Flag": "true"}),
        ({"StatusCallbackEvent": ["a", "b"]}, {"StatusCallbackEvent": ["a", "b"]}),
        ({"x": None}, REFUSED),
        ({"x": {"y": 1}}, REFUSED),
        ("To=+1", REFUSED),
    ],
)
def test_form_params(value: object, expected: object) -> None:
    if expected is REFUSED:
        with pytest.raises(InvalidInput) as info:
            validation.form_params(value)
        assert info.value.field.startswith("params")
    else:
        assert validation.form_params(value) == expected
