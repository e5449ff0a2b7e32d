"""``voice-engine run TASK`` (a task object, as the component documentation writes it) and
``voice-engine request METHOD PATH`` (the custom action), turned into task objects.

TASK is a file, ``-`` for stdin, or the JSON itself (it starts with ``{``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.control.validation import HTTP_METHODS
from engine.errors import InvalidInput

__all__ = ["add_task_commands", "read_task", "request_task"]


def add_task_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_call_server_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add ``run`` and ``request`` to the CLI."""
    run = commands.add_parser(
        "run",
        help="run a task object of the twilio/v1 component (makeCall, sendSMS, "
        "sendWhatsAppMessage, customAction); prints its output object",
    )
    run.add_argument("task", metavar="TASK", help="a JSON file, - for stdin, or the JSON itself")
    add_call_server_options(run)

    request = commands.add_parser(
        "request",
        help="the custom action: any Twilio REST request with the connection's auth; prints "
        "Twilio's JSON",
    )
    request.add_argument("method", metavar="METHOD", help=" | ".join(HTTP_METHODS))
    request.add_argument(
        "path",
        metavar="PATH",
        help="relative to the account (Messages.json) or absolute (/2010-04-01/Accounts.json)",
    )
    request.add_argument(
        "--data",
        "-d",
        action="append",
        default=[],
        metavar="K=V",
        help="a form field (POST) or query field (GET, DELETE); repeat a key to repeat the field",
    )
    request.add_argument(
        "--json", action="store_true", help="send the fields as a JSON object body instead"
    )


def read_task(source: str) -> dict[str, Any]:
    """The task object from ``source``: ``-`` (stdin), inline JSON, or a file's path."""
    if source == "-":
        text = sys.stdin.read()
    elif source.lstrip().startswith("{"):
        text = source
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput("TASK", f"cannot read {source!r}: {exc.strerror}") from None
    try:
        task = json.loads(text)
    except ValueError as exc:
        raise InvalidInput("TASK", f"not JSON: {exc}") from None
    if not isinstance(task, dict):
        raise InvalidInput("TASK", "must be a JSON object {label, name, parameters, type}")
    return task


def request_task(args: argparse.Namespace) -> dict[str, Any]:
    """``request``'s arguments as a ``customAction`` task object."""
    fields: dict[str, str | list[str]] = {}
    for item in args.data:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput("--data", f"{item!r} is not K=V")
        previous = fields.get(key)
        if previous is None:
            fields[key] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            fields[key] = [previous, value]
    parameters = {"method": args.method, "path": args.path, "params": fields, "json": args.json}
    return {"type": "twilio/v1/customAction", "parameters": parameters}
