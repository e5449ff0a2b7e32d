"""How the emulated API names and writes its resources: version, paths, dates, schema shapes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

__all__ = [
    "ACCOUNTS_PREFIX",
    "API_VERSION",
    "CALLS_PATH",
    "CALL_PATH",
    "MESSAGES_PATH",
    "MESSAGE_PATH",
    "fill_resource",
    "rfc2822",
]

API_VERSION = "2010-04-01"
"""The REST API version the emulator serves."""

ACCOUNTS_PREFIX = f"/{API_VERSION}/Accounts/"
"""Where every path of the API starts; the account SID follows."""
CALLS_PATH = ACCOUNTS_PREFIX + "{AccountSid}/Calls.json"
"""The spec's path template of the Calls list (create, list)."""
CALL_PATH = ACCOUNTS_PREFIX + "{AccountSid}/Calls/{Sid}.json"
"""The spec's path template of one call (fetch, update, delete)."""
MESSAGES_PATH = ACCOUNTS_PREFIX + "{AccountSid}/Messages.json"
"""The spec's path template of the Messages list (create, list)."""
MESSAGE_PATH = ACCOUNTS_PREFIX + "{AccountSid}/Messages/{Sid}.json"
"""The spec's path template of one message (fetch, update, delete)."""


def rfc2822(epoch: float | None) -> str | None:
    """``epoch`` as Twilio writes dates: ``Thu, 24 Aug 2023 05:01:45 +0000``."""
    if epoch is None:
        return None
    return format_datetime(datetime.fromtimestamp(int(epoch), UTC))


def fill_resource(template: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Every property of a spec schema, null unless ``values`` sets it (which must be in it)."""
    unknown = set(values) - set(template)
    if unknown:
        raise RuntimeError(f"not properties of the spec schema: {sorted(unknown)}")
    resource = dict.fromkeys(template)
    resource.update(values)
    return resource
