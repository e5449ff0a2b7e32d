"""The component's actions from the shell: ``voice-engine call | sms | whatsapp``.

Each prints its output object as JSON on stdout and exits 0, or prints the error — with
Twilio's code when Twilio refused — on stderr and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import trio

from engine.control.messages import send_sms, send_whatsapp
from engine.control.rest import Credentials, TwilioClient
from engine.errors import ConfigError, EngineError, InvalidInput, TwilioAPIError
from engine.loader import BUNDLED, load_stage_factory
from engine.server import ServerConfig, VoiceServer

__all__ = ["add_action_commands", "run_action"]


def add_action_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``call``, ``sms`` and ``whatsapp`` to the CLI."""
    call = commands.add_parser(
        "call", help="place a call that runs a pipeline live; prints the outcome when it ends"
    )
    call.add_argument("--to", required=True, help="number to call, E.164")
    call.add_argument("--from", dest="from_", required=True, help="your Twilio number, E.164")
    call.add_argument("--pipeline", default="turn-echo", help="pipeline to run on the call")
    call.add_argument("--timeout", type=int, help="ring timeout in seconds (1–600)")
    call.add_argument("--max-duration", type=float, help="minutes to wait before hanging up")
    call.add_argument("--host", default="127.0.0.1", help="address the media server binds")
    call.add_argument("--port", type=int, default=8080, help="port the media server binds")
    call.add_argument(
        "--public-url",
        default=os.environ.get("PUBLIC_URL"),
        help="base URL Twilio reaches this machine at (env PUBLIC_URL)",
    )

    sms = commands.add_parser("sms", help="send an SMS")
    sms.add_argument("--to", required=True)
    sms.add_argument("--from", dest="from_", required=True)
    sms.add_argument("--body", required=True)

    whatsapp = commands.add_parser("whatsapp", help="send a WhatsApp message")
    whatsapp.add_argument("--to", required=True)
    whatsapp.add_argument("--from", dest="from_", required=True)
    mode = whatsapp.add_mutually_exclusive_group(required=True)
    mode.add_argument("--body", help="free-form text")
    mode.add_argument("--content-sid", help="approved template, HX…")
    whatsapp.add_argument("--content-variables", help='template variables as JSON, {"1": "Ana"}')


def run_action(args: argparse.Namespace) -> int:
    """Run the action named by ``args.command``; print its JSON; return the exit code."""
    try:
        output = trio.run(_run, args)
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
    print(json.dumps(output, indent=2, ensure_ascii=False))
    return 0


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    credentials = Credentials.from_env()
    async with TwilioClient(credentials) as client:
        if args.command == "sms":
            return await send_sms(client, to=args.to, from_=args.from_, body=args.body)
        if args.command == "whatsapp":
            variables = None
            if args.content_variables:
                try:
                    variables = json.loads(args.content_variables)
                except ValueError as exc:
                    raise InvalidInput("ContentVariables", f"not JSON: {exc}") from exc
                if not isinstance(variables, dict):
                    raise InvalidInput("ContentVariables", "must be a JSON object")
            return await send_whatsapp(
                client,
                to=args.to,
                from_=args.from_,
                use_template=args.content_sid is not None,
                body=args.body,
                content_sid=args.content_sid,
                content_variables=variables,
            )
        return await _call(client, args)


async def _call(client: TwilioClient, args: argparse.Namespace) -> dict[str, Any]:
    token = os.environ.get("TWILIO_AUTH_TOKEN")
    if not token:
        raise ConfigError("TWILIO_AUTH_TOKEN is needed to verify Twilio's webhooks for the call")
    server = VoiceServer(
        ServerConfig(
            stage_factory=load_stage_factory(args.pipeline),
            pipelines=frozenset(BUNDLED) | {args.pipeline},
            auth_token=token,
            host=args.host,
            port=args.port,
            public_url=args.public_url,
        )
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        try:
            return await server.make_call(
                client,
                to=args.to,
                from_=args.from_,
                pipeline=args.pipeline,
                ring_timeout=args.timeout,
                max_duration=args.max_duration,
            )
        finally:
            server.shutdown()
