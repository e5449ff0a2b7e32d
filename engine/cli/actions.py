"""The component's actions from the shell: ``voice-engine call | sms | whatsapp | run |
request``.

Each prints its output object as JSON on stdout and exits 0, or prints the error — with
Twilio's code when Twilio refused — on stderr and exits 1; input refused before any request
(:class:`~engine.errors.InvalidInput`, naming the parameter) exits 2. ``call`` and ``run`` of a
``makeCall`` print the outcome the moment the call has ended, before their server stops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import trio

from engine.cli.tasks import add_task_commands, read_task, request_task
from engine.component import Component
from engine.errors import EngineError, InvalidInput, TwilioAPIError

__all__ = ["add_action_commands", "run_action"]

Emit = Callable[[dict[str, Any]], None]
"""Prints an output object."""


def add_action_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``call``, ``sms``, ``whatsapp``, ``run`` and ``request`` to the CLI."""
    call = commands.add_parser(
        "call", help="place a call that runs a pipeline live; prints the outcome when it ends"
    )
    call.add_argument("--to", required=True, help="number to call, E.164")
    call.add_argument("--from", dest="from_", required=True, help="your Twilio number, E.164")
    call.add_argument("--pipeline", default="turn-echo", help="pipeline to run on the call")
    call.add_argument("--timeout", type=int, help="ring timeout in seconds (1–600)")
    call.add_argument("--max-duration", type=float, help="minutes to wait before hanging up")
    add_call_server_options(call)

    sms = commands.add_parser("sms", help="send an SMS")
    sms.add_argument("--to", required=True, help="recipient, E.164")
    sms.add_argument(
        "--from",
        dest="from_",
        required=True,
        help="sender: E.164 number, alphanumeric sender ID, short code or channel address",
    )
    sms.add_argument("--body", required=True)

    whatsapp = commands.add_parser("whatsapp", help="send a WhatsApp message")
    whatsapp.add_argument("--to", required=True)
    whatsapp.add_argument("--from", dest="from_", required=True)
    mode = whatsapp.add_mutually_exclusive_group(required=True)
    mode.add_argument("--body", help="free-form text")
    mode.add_argument("--content-sid", help="approved template, HX…")
    whatsapp.add_argument(
        "--content-variables", help='template variables as JSON, {"1": "Ana"} (templates only)'
    )
    add_task_commands(commands, add_call_server_options)


def add_call_server_options(parser: argparse.ArgumentParser) -> None:
    """Where the media server of a ``makeCall`` listens, and the URL Twilio reaches it at."""
    parser.add_argument("--host", default="127.0.0.1", help="address the media server binds")
    parser.add_argument("--port", type=int, default=8080, help="port the media server binds")
    parser.add_argument(
        "--public-url",
        default=os.environ.get("PUBLIC_URL"),
        help="base URL Twilio reaches this machine at (env PUBLIC_URL)",
    )


def run_action(args: argparse.Namespace) -> int:
    """Run the action named by ``args.command``; print its JSON; return the exit code."""

    def emit(output: dict[str, Any]) -> None:
        print(json.dumps(output, indent=2, ensure_ascii=False), flush=True)

    try:
        trio.run(_run, args, emit)
    except TwilioAPIError as exc:
        detail = f" ({exc.more_info})" if exc.more_info else ""
        print(f"voice-engine: Twilio error {exc.code}: {exc.message}{detail}", file=sys.stderr)
        return 1
    except InvalidInput as exc:
        print(f"voice-engine: invalid input: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"voice-engine: {exc}", file=sys.stderr)
        return 2
    return 0


def _task(args: argparse.Namespace) -> dict[str, Any]:
    """The command's arguments as the component's task object."""
    if args.command == "run":
        return read_task(args.task)
    if args.command == "request":
        return request_task(args)
    if args.command == "sms":
        parameters: dict[str, Any] = {"To": args.to, "From": args.from_, "Body": args.body}
        return {"type": "twilio/v1/sendSMS", "parameters": parameters}
    if args.command == "whatsapp":
        variables = None
        if args.content_variables:
            try:
                variables = json.loads(args.content_variables)
            except ValueError as exc:
                raise InvalidInput("ContentVariables", f"not JSON: {exc}") from exc
        parameters = {
            "To": args.to,
            "From": args.from_,
            "useTemplate": args.content_sid is not None,
            "ContentSid": args.content_sid,
            "ContentVariables": variables,
            "Body": args.body,
        }
        return {"type": "twilio/v1/sendWhatsAppMessage", "parameters": parameters}
    parameters = {
        "To": args.to,
        "From": args.from_,
        "subWorkflow": args.pipeline,
        "timeout": args.timeout,
        "maxDuration": args.max_duration,
    }
    return {"type": "twilio/v1/makeCall", "parameters": parameters}


async def _run(args: argparse.Namespace, emit: Emit) -> None:
    component = Component(
        host=getattr(args, "host", "127.0.0.1"),
        port=getattr(args, "port", 8080),
        public_url=getattr(args, "public_url", None),
    )
    await component.execute(_task(args), on_output=emit)
