"""The emulated API over HTTP: authentication, fault injection, and routing to the endpoints.

:class:`ApiServer` is the ASGI application hypercorn serves on loopback. It checks HTTP Basic
auth (the account SID and Auth Token, or an API key), answers injected faults first, routes
``/2010-04-01/Accounts/{AccountSid}/(Calls|Messages)[/{Sid}].json`` to the
:class:`~engine.testing.twilio_api.calls.CallsEndpoint` and
:class:`~engine.testing.twilio_api.messages.MessagesEndpoint`, lists resources, and answers
every failure with Twilio's error JSON. Each request is recorded in the account as a
:class:`~engine.testing.twilio_api.records.RecordedRequest`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal
from urllib.parse import parse_qsl

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from engine.testing.stream import new_sid
from engine.testing.twilio_api.account import Account
from engine.testing.twilio_api.calls import CallsEndpoint
from engine.testing.twilio_api.messages import MessagesEndpoint
from engine.testing.twilio_api.records import RecordedRequest
from engine.testing.twilio_api.resources import ACCOUNTS_PREFIX
from engine.testing.twilio_api.spec import ApiError

__all__ = ["ApiServer"]

log = logging.getLogger(__name__)

_ROUTE = re.compile(r"^/2010-04-01/Accounts/([^/]+)/(Calls|Messages)(?:/([^/]+))?\.json$")
_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
_MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
_DEFAULT_ERRORS = {
    400: (20001, "Bad Request"),
    401: (20003, "Authenticate"),
    403: (20403, "Forbidden"),
    404: (20404, "The requested resource was not found"),
    405: (20004, "Method not allowed"),
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    503: (20503, "Service Unavailable"),
}


@dataclass
class _Fault:
    status: int
    code: int
    message: str
    retry_after: float | None
    remaining: int
    path_contains: str


@dataclass
class _Delay:
    seconds: float
    remaining: int
    path_contains: str


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: Any
    headers: tuple[tuple[str, str], ...] = ()


def _error_reply(error: ApiError, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(error.status, error.body(), headers)


def _credentials(authorization: str | None) -> tuple[str, str] | None:
    """The (username, password) of an HTTP Basic ``Authorization`` header, if it is one."""
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


class ApiServer:
    """The HTTP side of the emulated account: the ASGI app, its faults, and serving it."""

    def __init__(self, account: Account, calls: CallsEndpoint, messages: MessagesEndpoint) -> None:
        self._account = account
        self._calls = calls
        self._messages = messages
        self._faults: list[_Fault] = []
        self._delays: list[_Delay] = []

    def inject(
        self,
        *,
        status: int,
        code: int | None,
        retry_after: float | None,
        times: int,
        path_contains: str,
        message: str | None,
    ) -> None:
        """Answer the next ``times`` matching requests with an error; see
        :meth:`~engine.testing.twilio_api.emulator.TwilioEmulator.inject`.
        """
        default_code, default_message = _DEFAULT_ERRORS.get(status, (status, "Error"))
        self._faults.append(
            _Fault(
                status=status,
                code=default_code if code is None else code,
                message=message or default_message,
                retry_after=retry_after,
                remaining=times,
                path_contains=path_contains,
            )
        )

    def delay_after_accept(self, seconds: float, times: int, path_contains: str) -> None:
        """Handle the next ``times`` matching requests as usual, then wait before answering."""
        self._delays.append(_Delay(seconds, times, path_contains))

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the API on ``host:port`` until cancelled; start with the base URL it serves."""
        config = HypercornConfig()
        config.bind = [f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                partial(hypercorn_serve, self._asgi, config, mode="asgi")
            )
            task_status.started(binds[0].rstrip("/"))

    async def _asgi(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            event = await receive()
            if event["type"] != "http.request":
                return
            chunks.append(event["body"])
            if not event["more_body"]:
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope["query_string"].decode("latin-1")
        body = b"".join(chunks).decode("utf-8", errors="replace")
        form = parse_qsl(body, keep_blank_values=True) if scope["method"] == "POST" else []
        credentials = _credentials(headers.get("authorization"))
        username = credentials[0] if credentials else None
        try:
            reply = await self._handle(scope["method"], scope["path"], query, form, headers)
        except ApiError as exc:
            reply = _error_reply(exc)
        except Exception:
            log.exception("emulated Twilio API failed on %s %s", scope["method"], scope["path"])
            reply = _error_reply(ApiError(500, 20500, "Internal Server Error"))
        self._account.requests.append(
            RecordedRequest(scope["method"], scope["path"], query, form, reply.status, username)
        )
        for delay in self._delays:
            if delay.remaining > 0 and delay.path_contains in scope["path"]:
                delay.remaining -= 1
                await trio.sleep(delay.seconds)
                break
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        response_headers = [
            (b"twilio-request-id", new_sid("RQ").encode()),
            *((k.encode(), v.encode()) for k, v in reply.headers),
        ]
        if reply.body is not None:
            response_headers.append((b"content-type", b"application/json; charset=utf-8"))
        try:
            await send(
                {"type": "http.response.start", "status": reply.status, "headers": response_headers}
            )
            await send({"type": "http.response.body", "body": payload, "more_body": False})
        except Exception:  # the client gave up (a timeout test): nothing to answer
            log.debug("client left before the answer", exc_info=True)

    def _authenticated(self, authorization: str | None) -> bool:
        credentials = _credentials(authorization)
        if credentials is None:
            return False
        username, password = credentials
        account = self._account
        pairs = (
            (account.account_sid, account.auth_token),
            (account.api_key_sid, account.api_key_secret),
        )
        return any(
            hmac.compare_digest(username.encode(), user.encode())
            and hmac.compare_digest(password.encode(), secret.encode())
            for user, secret in pairs
        )

    async def _handle(
        self,
        method: str,
        path: str,
        query: str,
        form: list[tuple[str, str]],
        headers: Mapping[str, str],
    ) -> _Reply:
        for fault in self._faults:
            if fault.remaining > 0 and fault.path_contains in path:
                fault.remaining -= 1
                extra: tuple[tuple[str, str], ...] = ()
                if fault.retry_after is not None:
                    extra = (("Retry-After", f"{fault.retry_after:g}"),)
                return _error_reply(ApiError(fault.status, fault.code, fault.message), extra)
        if not self._authenticated(headers.get("authorization")):
            challenge = (("WWW-Authenticate", 'Basic realm="Twilio API"'),)
            return _error_reply(ApiError(401, 20003, "Authenticate"), challenge)
        account = self._account
        not_found = ApiError(404, 20404, f"The requested resource {path} was not found")
        match = _ROUTE.match(path)
        if match is None or match.group(1) != account.account_sid:
            raise not_found
        kind, sid = match.group(2), match.group(3)
        allowed = ("GET", "POST", "DELETE") if sid else ("GET", "POST")
        if method not in allowed:
            raise ApiError(405, 20004, "Method not allowed")
        if kind == "Calls":
            if sid is None:
                if method == "POST":
                    return _Reply(201, self._calls.create(form))
                return self._list("calls", query)
            call = account.calls.get(sid) if _CALL_SID.match(sid) else None
            if call is None:
                raise not_found
            if method == "GET":
                return _Reply(200, self._calls.resource(call))
            if method == "DELETE":
                del account.calls[sid]
                return _Reply(204, None)
            return _Reply(200, await self._calls.update(call, form))
        if sid is None:
            if method == "POST":
                return _Reply(201, self._messages.create(form))
            return self._list("messages", query)
        message = account.messages.get(sid) if _MESSAGE_SID.match(sid) else None
        if message is None:
            raise not_found
        if method == "GET":
            return _Reply(200, dict(message.resource))
        if method == "DELETE":
            del account.messages[sid]
            return _Reply(204, None)
        return _Reply(200, self._messages.update(message, form))

    def _list(self, kind: Literal["calls", "messages"], query: str) -> _Reply:
        account = self._account
        filters = dict(parse_qsl(query))
        items: list[dict[str, Any]] = (
            [self._calls.resource(call) for call in account.calls.values()]
            if kind == "calls"
            else [dict(message.resource) for message in account.messages.values()]
        )
        items.reverse()  # newest first, as Twilio lists
        for name, key in (("To", "to"), ("From", "from"), ("Status", "status")):
            if name in filters:
                items = [item for item in items if item[key] == filters[name]]
        try:
            page_size = max(1, min(1000, int(filters.get("PageSize", "50"))))
        except ValueError:
            raise ApiError(400, 20001, "PageSize must be an integer") from None
        page = items[:page_size]
        uri = (
            f"{ACCOUNTS_PREFIX}{account.account_sid}/{kind.capitalize()}.json"
            f"?PageSize={page_size}&Page=0"
        )
        return _Reply(
            200,
            {
                kind: page,
                "end": max(0, len(page) - 1),
                "first_page_uri": uri,
                "next_page_uri": None,
                "page": 0,
                "page_size": page_size,
                "previous_page_uri": None,
                "start": 0,
                "uri": uri,
            },
        )
