"""The ``twilio/v1`` component from Python: the documentation's task objects in, its output
objects out — the same entry as ``voice-engine run``.

::

    from engine.component import execute

    output = await execute({
        "label": "Send SMS", "name": "sendSMS", "type": "twilio/v1/sendSMS",
        "parameters": {"To": "+14155552671", "From": "+15005550006", "Body": "Hi"},
    })

Tasks are checked whole by :func:`~engine.control.tasks.parse_task` (the checks the CLI and
the keyword functions share) before anything is sent. ``makeCall`` runs its ``subWorkflow``
live: on the :class:`~engine.server.VoiceServer` you give (it must serve that pipeline), or on a
server of its own started for the call (:func:`open_call_server`, as ``voice-engine call``
does). The connection is the task's ``connection`` object, else the component's, else the
environment (``TWILIO_ACCOUNT_SID`` + ``TWILIO_AUTH_TOKEN``, or ``TWILIO_API_KEY`` +
``TWILIO_API_SECRET``). Trigger objects become :class:`~engine.server.Triggers` with
:func:`triggers`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from engine.control.credentials import Credentials
from engine.control.messages import message_output
from engine.control.rest import FormValue, TwilioClient
from engine.control.tasks import (
    CallRequest,
    MessageRequest,
    RestRequest,
    parse_task,
    parse_trigger,
)
from engine.control.validation import http_method, json_object, rest_path
from engine.errors import ConfigError, InvalidInput
from engine.loader import BUNDLED, load_stage_factory
from engine.media.stage import StageFactory
from engine.server import ServerConfig, Triggers, VoiceServer

__all__ = ["Component", "execute", "open_call_server", "stage_factory", "triggers"]

OutputHandler = Callable[[dict[str, Any]], None]
"""Receives an action's output object the moment it is known."""


def stage_factory(pipeline: str) -> StageFactory:
    """The stage factory of ``pipeline`` (a bundled name or ``module:factory``), or
    :class:`~engine.errors.InvalidInput` naming ``subWorkflow``."""
    try:
        return load_stage_factory(pipeline)
    except ConfigError as exc:
        raise InvalidInput("subWorkflow", str(exc)) from None


@asynccontextmanager
async def open_call_server(
    pipeline: str,
    *,
    auth_token: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    public_url: str | None = None,
    factory: StageFactory | None = None,
) -> AsyncIterator[VoiceServer]:
    """A :class:`~engine.server.VoiceServer` serving ``pipeline`` for the calls placed in the
    block (``await server.make_call(client, …)``).

    It stops when the block ends, without a drain: the calls it served have ended by then
    (``make_call`` returns only at a call's end), so nothing holds the caller's result.
    """
    server = VoiceServer(
        ServerConfig(
            stage_factory=factory or stage_factory(pipeline),
            pipelines=frozenset(BUNDLED) | {pipeline},
            auth_token=auth_token,
            host=host,
            port=port,
            public_url=public_url,
        )
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


class Component:
    """The component with its connection, and where ``makeCall`` runs its pipeline.

    ``connection`` is the component's connection object (``{"username", "password"}``;
    ``None``: the environment). ``server`` is a running :class:`~engine.server.VoiceServer`
    for ``makeCall``; without one each call gets a server of its own on ``host``:``port``,
    reached by Twilio at ``public_url`` (default: ``PUBLIC_URL``, else the bound address).
    ``base_url`` is the REST API's (default: ``TWILIO_API_BASE_URL``, else Twilio's).
    """

    def __init__(
        self,
        connection: object = None,
        *,
        server: VoiceServer | None = None,
        base_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        public_url: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.connection = connection
        self.server = server
        self.base_url = base_url
        self.host = host
        self.port = port
        self.environ = os.environ if environ is None else environ
        self.public_url = public_url or self.environ.get("PUBLIC_URL") or None

    def credentials(self, connection: object = None) -> Credentials:
        """The credentials of ``connection``, else the component's, else the environment's."""
        chosen = connection if connection is not None else self.connection
        if chosen is None:
            return Credentials.from_env(self.environ)
        return Credentials.from_connection(chosen, self.environ)

    def client(self, credentials: Credentials | None = None) -> TwilioClient:
        """A REST client on this component's connection (``async with component.client()``)."""
        return TwilioClient(credentials or self.credentials(), base_url=self.base_url)

    async def execute(
        self, task: object, *, on_output: OutputHandler | None = None
    ) -> dict[str, Any]:
        """Run a task object; return the action's output object.

        ``on_output``, if given, gets the output the moment it is known — for ``makeCall`` on a
        server of its own, before that server has stopped (the CLI prints it then). Raises
        :class:`~engine.errors.InvalidInput` (nothing sent) for a bad task,
        :class:`~engine.errors.TwilioAPIError` when Twilio refuses.
        """
        parsed = parse_task(task)
        credentials = self.credentials(parsed.connection)
        request = parsed.request
        emit = on_output or (lambda output: None)
        if isinstance(request, CallRequest) and self.server is None:
            factory = stage_factory(request.pipeline)  # a bad subWorkflow fails before the call
            async with self.client(credentials) as client:
                return await self._call_on_own_server(client, credentials, request, factory, emit)
        async with self.client(credentials) as client:
            if isinstance(request, MessageRequest):
                resource = await client.request("POST", "Messages.json", request.params)
                output = message_output(resource)
            elif isinstance(request, RestRequest):
                output = await client.request(
                    request.method, request.path, request.params, json_body=request.json_body
                )
            else:
                assert self.server is not None
                output = await self.server.make_call(client, **_call_options(request))
        emit(output)
        return output

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, FormValue] | None = None,
        *,
        json_body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The custom action: ``method`` on ``path`` (relative to the account, ``Calls.json``,
        or absolute, ``/2010-04-01/Accounts.json``) with form or query ``params`` (or a JSON
        body); returns Twilio's JSON."""
        checked_method, checked_path = http_method(method), rest_path(path)
        body = json_object(json_body, "json_body") if json_body is not None else None
        async with self.client() as client:
            return await client.request(checked_method, checked_path, params, json_body=body)

    async def _call_on_own_server(
        self,
        client: TwilioClient,
        credentials: Credentials,
        request: CallRequest,
        factory: StageFactory,
        emit: OutputHandler,
    ) -> dict[str, Any]:
        token = None if credentials.api_key_sid else credentials.auth_token
        token = token or self.environ.get("TWILIO_AUTH_TOKEN")
        if not token:
            raise ConfigError(
                "makeCall needs the Auth Token to verify Twilio's webhooks: set TWILIO_AUTH_TOKEN"
            )
        async with open_call_server(
            request.pipeline,
            auth_token=token,
            host=self.host,
            port=self.port,
            public_url=self.public_url,
            factory=factory,
        ) as server:
            output = await server.make_call(client, **_call_options(request))
            emit(output)  # now, not once the server has stopped
        return output


def _call_options(request: CallRequest) -> dict[str, Any]:
    return {
        "to": request.to,
        "from_": request.from_,
        "pipeline": request.pipeline,
        "ring_timeout": request.ring_timeout,
        "max_duration": request.max_duration,
    }


async def execute(
    task: object, connection: object = None, *, server: VoiceServer | None = None
) -> dict[str, Any]:
    """Run a task object on ``connection`` (a task's own ``connection`` wins; ``None``: the
    environment) and return the action's output object; see :class:`Component`."""
    return await Component(connection, server=server).execute(task)


TriggerEvent = Callable[[str, dict[str, Any]], Awaitable[None]]
"""Receives a trigger's name (``inboundCall``, ``newWhatsappMessage``) and its output."""


def triggers(*tasks: object, handler: TriggerEvent) -> Triggers:
    """:class:`~engine.server.Triggers` for the given trigger objects, each event passed to
    ``handler``. ``inboundCall``'s ``subWorkflow`` becomes the pipeline inbound calls run
    (the server must serve it: include it in ``ServerConfig.pipelines``)."""
    specs = {spec.trigger: spec for spec in map(parse_trigger, tasks)}

    def forward(name: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def deliver(output: dict[str, Any]) -> None:
            await handler(name, output)

        return deliver

    inbound = specs.get("inboundCall")
    return Triggers(
        inbound_call=forward("inboundCall") if inbound else None,
        whatsapp_message=forward("newWhatsappMessage") if "newWhatsappMessage" in specs else None,
        sub_workflow=inbound.sub_workflow if inbound else None,
    )
