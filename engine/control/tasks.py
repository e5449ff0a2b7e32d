"""The component's task objects, as its documentation writes them (sans-IO).

A task is the documentation's "Example JSON Structure"::

    {"label": "Send SMS", "name": "sendSMS",
     "parameters": {"To": "+14155552671", "From": "+15005550006", "Body": "Hi"},
     "type": "twilio/v1/sendSMS"}

``type`` says the action (``twilio/v1/makeCall``, ``sendSMS``, ``sendWhatsAppMessage``, or
``customAction``: ``{"method", "path", "params", "json"}``); ``label`` and ``name`` are the
workflow's own words for its step and are not checked beyond being strings. A task may carry
its ``connection`` (see :meth:`~engine.control.credentials.Credentials.from_connection`).
:func:`parse_task` checks every parameter with :mod:`engine.control.validation` — the checks
the keyword functions and the CLI use — and returns the request to make, so a bad task fails
whole, naming its parameter, before anything is sent. :func:`parse_trigger` does the same for
the trigger objects (``inboundCall`` with its ``subWorkflow``, ``newWhatsappMessage``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.control import validation
from engine.errors import InvalidInput

__all__ = [
    "ACTIONS",
    "TRIGGERS",
    "TYPE_PREFIX",
    "CallRequest",
    "MessageRequest",
    "RestRequest",
    "Task",
    "TriggerSpec",
    "parse_task",
    "parse_trigger",
]

TYPE_PREFIX = "twilio/v1/"
ACTIONS: dict[str, tuple[str, ...]] = {
    "makeCall": ("To", "From", "subWorkflow", "timeout", "maxDuration"),
    "sendSMS": ("To", "From", "Body"),
    "sendWhatsAppMessage": (
        "To",
        "From",
        "useTemplate",
        "ContentSid",
        "ContentVariables",
        "Body",
    ),
    "customAction": ("method", "path", "params", "json"),
}
"""Each action and its documented parameters."""
TRIGGERS: dict[str, tuple[str, ...]] = {
    "inboundCall": ("subWorkflow",),
    "newWhatsappMessage": (),
}
"""Each trigger and its documented parameters."""
_TASK_FIELDS = frozenset({"label", "name", "parameters", "type", "connection"})


@dataclass(frozen=True, slots=True)
class MessageRequest:
    """sendSMS or sendWhatsAppMessage: the checked ``Messages.json`` fields."""

    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class CallRequest:
    """makeCall, checked: numbers in E.164, the pipeline's name, ring ``timeout`` in seconds,
    ``maxDuration`` in minutes."""

    to: str
    from_: str
    pipeline: str
    ring_timeout: int | None = None
    max_duration: float | None = None


@dataclass(frozen=True, slots=True)
class RestRequest:
    """The custom action: any request on the account's REST API."""

    method: str
    path: str
    params: Mapping[str, str | list[str]]
    """Form fields (POST) or query fields (GET, DELETE)."""
    json_body: Mapping[str, Any] | None = None
    """A JSON body instead of form fields (``"json": true``)."""


Request = MessageRequest | CallRequest | RestRequest
"""What an action task asks for."""


@dataclass(frozen=True, slots=True)
class Task:
    """A checked task: its action, the request to make, and its own connection (unchecked
    here: the environment may complete it), if it carries one."""

    action: str
    request: Request
    connection: object = None


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """A checked trigger object: which trigger, and for ``inboundCall`` its pipeline."""

    trigger: str
    sub_workflow: str | None = None


def _envelope(task: object, known: Mapping[str, tuple[str, ...]]) -> tuple[str, Mapping[str, Any]]:
    """The task's kind (the part of ``type`` after ``twilio/v1/``) and its parameters."""
    if not isinstance(task, Mapping):
        raise InvalidInput("task", "must be a JSON object {label, name, parameters, type}")
    for field in task:
        if field not in _TASK_FIELDS:
            raise InvalidInput(str(field), "is not a task field (label, name, parameters, type)")
    for field in ("label", "name"):
        if task.get(field) is not None and not isinstance(task[field], str):
            raise InvalidInput(field, "must be a string")
    kind_type = validation.text(task.get("type"), "type")
    kind = kind_type.removeprefix(TYPE_PREFIX)
    if not kind_type.startswith(TYPE_PREFIX) or kind not in known:
        names = ", ".join(TYPE_PREFIX + name for name in known)
        raise InvalidInput("type", f"{kind_type!r} is not one of {names}")
    parameters = task.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, Mapping):
        raise InvalidInput("parameters", "must be an object")
    for name in parameters:
        if name not in known[kind]:
            expected = ", ".join(known[kind]) or "none"
            raise InvalidInput(str(name), f"is not a parameter of {kind} (it takes {expected})")
    return kind, parameters


def parse_task(task: object) -> Task:
    """Check an action's task object; return what to do. Raises
    :class:`~engine.errors.InvalidInput` naming the first parameter that is missing, of the
    wrong type or invalid."""
    action, p = _envelope(task, ACTIONS)
    assert isinstance(task, Mapping)
    request: Request
    if action == "sendSMS":
        request = MessageRequest(
            validation.sms_params(to=p.get("To"), from_=p.get("From"), body=p.get("Body"))
        )
    elif action == "sendWhatsAppMessage":
        request = MessageRequest(
            validation.whatsapp_params(
                to=p.get("To"),
                from_=p.get("From"),
                use_template=p.get("useTemplate"),
                body=p.get("Body"),
                content_sid=p.get("ContentSid"),
                content_variables=p.get("ContentVariables"),
            )
        )
    elif action == "makeCall":
        request = CallRequest(
            to=validation.e164(p.get("To"), "To"),
            from_=validation.e164(p.get("From"), "From"),
            pipeline=validation.pipeline_name(p.get("subWorkflow")),
            ring_timeout=validation.ring_timeout(p.get("timeout")),
            max_duration=validation.max_duration(p.get("maxDuration")),
        )
    else:
        request = _rest_request(p)
    return Task(action, request, task.get("connection"))


def _rest_request(p: Mapping[str, Any]) -> RestRequest:
    method = validation.http_method(p.get("method") or "GET")
    path = validation.rest_path(p.get("path"))
    as_json = p.get("json")
    if as_json is not None and not isinstance(as_json, bool):
        raise InvalidInput("json", "must be true or false")
    if as_json:
        return RestRequest(method, path, {}, validation.json_object(p.get("params")))
    return RestRequest(method, path, validation.form_params(p.get("params")))


def parse_trigger(task: object) -> TriggerSpec:
    """Check a trigger object (``twilio/v1/inboundCall`` with ``subWorkflow``, or
    ``twilio/v1/newWhatsappMessage``)."""
    trigger, p = _envelope(task, TRIGGERS)
    if trigger == "inboundCall":
        return TriggerSpec(trigger, validation.pipeline_name(p.get("subWorkflow")))
    return TriggerSpec(trigger)
