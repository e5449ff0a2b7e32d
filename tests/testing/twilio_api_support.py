"""Helpers for the tests of the emulated Twilio REST API (engine.testing.twilio_api).

An emulator with an authenticated httpx client, request shortcuts, Twilio's error shape, a small
hypercorn webhook receiver that checks every signature with twilio-python's
``RequestValidator``, a real in-process ``VoiceServer`` running the echo pipeline, and a check of
resources against the spec's schemas.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from twilio.request_validator import RequestValidator

from conftest import SPEC_PATH, spec_json
from engine.server import ServerConfig, VoiceServer
from engine.testing.twilio_api import TwilioEmulator, open_twilio_emulator
from pipelines import echo

TO = "+15558675310"
FROM = "+15017122661"
TOKEN = "emulator-test-token"
ERROR_KEYS = {"code", "message", "more_info", "status"}
RFC_2822 = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$")


def spec_path() -> Path:
    """Twilio's OpenAPI document, as vendored in the package (gzipped)."""
    return SPEC_PATH


def spec() -> dict[str, Any]:
    """Twilio's OpenAPI document, parsed (once per test session)."""
    return spec_json()


@asynccontextmanager
async def emulator(**settings: Any) -> AsyncIterator[tuple[TwilioEmulator, httpx.AsyncClient]]:
    """An emulator, with ``settings`` applied, and an httpx client authenticated to it."""
    async with open_twilio_emulator(spec_path=spec_path(), auth_token=TOKEN) as emu:
        for name, value in settings.items():
            setattr(emu, name, value)
        async with httpx.AsyncClient(
            base_url=emu.base_url, auth=(emu.account_sid, emu.auth_token), timeout=10
        ) as client:
            yield emu, client


def path(emu: TwilioEmulator, resource: str, sid: str | None = None) -> str:
    """The API path of ``resource`` (``Calls``, ``Messages``), or of one of them by ``sid``."""
    base = f"/2010-04-01/Accounts/{emu.account_sid}/{resource}"
    return f"{base}/{sid}.json" if sid else f"{base}.json"


async def create_message(
    emu: TwilioEmulator, client: httpx.AsyncClient, **fields: Any
) -> httpx.Response:
    """Create a message (a valid SMS unless ``fields`` say otherwise)."""
    data = {"To": TO, "From": FROM, "Body": "Hello from the emulator", **fields}
    return await client.post(path(emu, "Messages"), data=data)


async def create_call(
    emu: TwilioEmulator, client: httpx.AsyncClient, **fields: Any
) -> httpx.Response:
    """Create a call from ``FROM`` to ``TO`` with ``fields`` (say where its TwiML is)."""
    data = {"To": TO, "From": FROM, **fields}
    return await client.post(path(emu, "Calls"), data=data)


async def post_form(
    client: httpx.AsyncClient, url: str, pairs: list[tuple[str, str]]
) -> httpx.Response:
    """POST form fields in order, repeated names included."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return await client.post(url, content=urlencode(pairs), headers=headers)


def assert_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    """Check ``response`` is Twilio's error JSON with ``status`` and ``code``; return the body."""
    body: dict[str, Any] = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert isinstance(body["message"], str) and body["message"]
    return body


async def until(predicate: Callable[[], bool], timeout: float = 5) -> None:
    """Wait until ``predicate()`` holds, polling; fail after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


@dataclass
class Received:
    """One request the webhook receiver got, and whether its signature was valid."""

    path: str
    params: dict[str, str]
    signed: bool


@asynccontextmanager
async def receiver(status: int = 200) -> AsyncIterator[tuple[str, list[Received]]]:
    """A tiny webhook receiver that answers ``status`` and checks each request's signature."""
    received: list[Received] = []
    validator = RequestValidator(TOKEN)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (event := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = scope["query_string"].decode()
        url = f"http://{headers['host']}{scope['path']}" + (f"?{query}" if query else "")
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
        signed = validator.validate(url, params, headers.get("x-twilio-signature", ""))
        if scope["method"] == "GET":
            params = dict(parse_qsl(query, keep_blank_values=True))
        received.append(Received(scope["path"], params, signed))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config, mode="asgi"))
        yield binds[0], received
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def voice_server() -> AsyncIterator[str]:
    """The engine's voice server (echo pipeline) in this test's nursery."""
    server = VoiceServer(ServerConfig(stage_factory=echo.create, auth_token=TOKEN, port=0))
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(server.serve)
        # Webhooks wait for the start-up capacity measurement; a call with a time limit of a
        # fraction of a second (time_scale) must not spend it there.
        await server.switchboard.ready()
        yield url
        server.shutdown()


def check_against_schema(resource: dict[str, Any], schema_name: str) -> None:
    """Every property of the spec schema, each of the JSON type (and enum, pattern) it says."""
    schemas = spec()["components"]["schemas"]
    properties = schemas[schema_name]["properties"]
    assert set(resource) == set(properties)
    for name, prop in properties.items():
        if "$ref" in prop:
            prop = schemas[prop["$ref"].rsplit("/", 1)[1]]
        value: Any = resource[name]
        if value is None:
            assert prop.get("nullable", False), name
            continue
        expected = {"string": str, "integer": int, "object": dict}[prop["type"]]
        assert type(value) is expected, (name, value)
        if "enum" in prop:
            assert value in prop["enum"], (name, value)
        if "pattern" in prop:
            assert re.match(prop["pattern"], str(value)), (name, value)
        if prop.get("format") == "date-time-rfc-2822":
            assert RFC_2822.match(str(value)), (name, value)
            parsedate_to_datetime(str(value))
