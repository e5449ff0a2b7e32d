"""Messaging inputs and the message output object (the seed's exact shape)."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import spec_json
from engine.control.messages import e164, message_output
from engine.errors import InvalidInput

# The seed's output object: name → expected JSON type (None allowed where Twilio sends null).
SEED_SHAPE: dict[str, Any] = {
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


def spec_message_example() -> dict[str, Any]:
    """A Message resource with a value of the right type for every property of the spec's
    ``api.v2010.account.message`` schema."""
    spec = spec_json()
    schema = spec["components"]["schemas"]["api.v2010.account.message"]["properties"]
    values: dict[str, Any] = {}
    for name, prop in schema.items():
        if "$ref" in prop:
            enum = spec["components"]["schemas"][prop["$ref"].rsplit("/", 1)[1]]["enum"]
            values[name] = enum[0]
        elif prop.get("format") == "date-time-rfc-2822":
            values[name] = "Thu, 24 Aug 2023 05:01:45 +0000"
        elif prop.get("format") == "currency":
            values[name] = "USD"
        elif prop.get("format") == "phone-number":
            values[name] = "+15017122661"
        elif prop["type"] == "integer":
            values[name] = 30007
        elif prop["type"] == "object":
            values[name] = {"media": "/2010-04-01/Accounts/AC1/Messages/SM1/Media.json"}
        else:
            values[name] = "1" if name.startswith("num_") else f"{name}-value"
    return values


def check_shape(value: Any, shape: Any, path: str = "") -> None:
    if isinstance(shape, dict) and shape is not dict:
        assert isinstance(value, dict), path
        assert set(value) == set(shape), (path, set(value) ^ set(shape))
        for key, sub in shape.items():
            check_shape(value[key], sub, f"{path}.{key}")
    else:
        assert isinstance(value, shape) and not isinstance(value, bool), (path, value)


def test_every_seed_field_with_its_type_from_a_spec_shaped_resource() -> None:
    output = message_output(spec_message_example())
    check_shape(output, SEED_SHAPE)
    assert output["dateCreated"] == {"dateTime": "2023-08-24T05:01:45", "zoneId": "Z"}
    assert output["currency"] == {
        "currencyCode": "USD",
        "defaultFractionDigits": 2,
        "numericCode": 840,
    }
    assert output["from"] == {"rawNumber": "+15017122661"}
    assert output["errorCode"] == 30007


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("EUR", ("EUR", 2, 978)),
        ("jpy", ("JPY", 0, 392)),
        ("BHD", ("BHD", 3, 48)),
    ],
)
def test_currency_comes_from_iso_4217(unit: str, expected: tuple[str, int, int]) -> None:
    resource = {**spec_message_example(), "price_unit": unit}
    currency = message_output(resource)["currency"]
    assert (
        currency["currencyCode"],
        currency["defaultFractionDigits"],
        currency["numericCode"],
    ) == expected


def test_unbilled_and_unsent_messages_have_nulls() -> None:
    resource = {
        **spec_message_example(),
        "price": None,
        "price_unit": None,
        "date_sent": None,
        "error_code": None,
        "num_segments": 2,
    }
    output = message_output(resource)
    assert output["price"] is None and output["currency"] is None
    assert output["dateSent"] is None and output["errorCode"] is None
    assert output["numSegments"] == "2"


def test_non_utc_offsets_keep_their_zone() -> None:
    output = message_output({"date_created": "Fri, 20 Aug 2010 01:13:42 -0530"})
    assert output["dateCreated"] == {"dateTime": "2010-08-20T01:13:42", "zoneId": "-05:30"}


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("+15017122661", True),
        ("+447911123456", True),
        ("+4915112345678", True),
        ("15017122661", False),
        ("+1 501 712 2661", False),
        ("+1501712266", False),
        ("+15558675310", False),  # 555-01xx aside, 555 numbers are not assigned
        ("", False),
        ("+", False),
        ("+abc", False),
        ("whatsapp:+15017122661", False),
    ],
)
def test_e164_validation(value: str, ok: bool) -> None:
    if ok:
        assert e164(value, "To") == value
    else:
        with pytest.raises(InvalidInput) as info:
            e164(value, "To")
        assert info.value.field == "To"
