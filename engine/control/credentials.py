"""The component's connection: an Account SID with its Auth Token, or an API key (sans-IO).

A connection comes from the environment (:meth:`Credentials.from_env`) or from the
component's ``connection`` object (:meth:`Credentials.from_connection`): ``username`` is the
Account SID and ``password`` the Auth Token, as the component documentation has it; or
``username`` is an API key SID (``SK…``) and ``password`` its secret — then the account is
``accountSid`` in the same object, else ``TWILIO_ACCOUNT_SID``, because the REST paths name the
account and a key does not.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError, InvalidInput

__all__ = ["Credentials"]

_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_API_KEY_SID = re.compile(r"^SK[0-9a-fA-F]{32}$")
CONNECTION_FIELDS = ("username", "password", "accountSid")
"""The fields a ``connection`` object may have."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A Twilio connection: the account, and Auth Token or API key (SID + secret) to sign in."""

    account_sid: str
    auth_token: str = field(repr=False)
    """The Auth Token, or the API key's secret when ``api_key_sid`` is set."""
    api_key_sid: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        """Read ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN`` (or ``TWILIO_API_KEY`` +
        ``TWILIO_API_SECRET``)."""
        env = os.environ if environ is None else environ
        account_sid = env.get("TWILIO_ACCOUNT_SID", "")
        if not account_sid:
            raise ConfigError("TWILIO_ACCOUNT_SID is not set")
        key, secret = env.get("TWILIO_API_KEY"), env.get("TWILIO_API_SECRET")
        if key and secret:
            return cls(account_sid, secret, key)
        token = env.get("TWILIO_AUTH_TOKEN", "")
        if not token:
            raise ConfigError(
                "TWILIO_AUTH_TOKEN is not set (or TWILIO_API_KEY + TWILIO_API_SECRET)"
            )
        return cls(account_sid, token)

    @classmethod
    def from_connection(
        cls, connection: object, environ: Mapping[str, str] | None = None
    ) -> Credentials:
        """The component's ``connection`` object: ``{"username": "AC…", "password": token}``,
        or ``{"username": "SK…", "password": secret, "accountSid": "AC…"}`` (``accountSid``
        may instead come from ``TWILIO_ACCOUNT_SID``). Raises :class:`InvalidInput` naming
        the field that is wrong."""
        if not isinstance(connection, Mapping):
            raise InvalidInput("connection", "must be an object {username, password}")
        for name in connection:
            if name not in CONNECTION_FIELDS:
                raise InvalidInput(
                    f"connection.{name}", "is not a connection field (username, password)"
                )
        username = _text(connection, "username")
        password = _text(connection, "password")
        account_sid = connection.get("accountSid")
        if account_sid is not None and (
            not isinstance(account_sid, str) or not _ACCOUNT_SID.match(account_sid)
        ):
            raise InvalidInput("connection.accountSid", "must be an Account SID, AC + 32 hex")
        if _ACCOUNT_SID.match(username):
            if account_sid is not None and account_sid != username:
                raise InvalidInput(
                    "connection.accountSid", "differs from username (the Account SID)"
                )
            return cls(username, password)
        if _API_KEY_SID.match(username):
            env = os.environ if environ is None else environ
            account = account_sid or env.get("TWILIO_ACCOUNT_SID", "")
            if not account:
                raise InvalidInput(
                    "connection.accountSid",
                    "an API key (SK…) needs the Account SID: give accountSid or set "
                    "TWILIO_ACCOUNT_SID",
                )
            return cls(account, password, username)
        raise InvalidInput(
            "connection.username", "must be an Account SID (AC…) or an API key SID (SK…)"
        )

    @property
    def username(self) -> str:
        """The HTTP Basic username."""
        return self.api_key_sid or self.account_sid


def _text(connection: Mapping[str, Any], name: str) -> str:
    value = connection.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"connection.{name}", "is required (a non-empty string)")
    return value
