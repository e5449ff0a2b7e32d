"""The ``voice-engine`` command line: ``serve``, ``demo``, ``bench`` and the actions ``call``,
``sms``, ``whatsapp``, ``run`` (a task object) and ``request`` (the custom action).

One module per command family: :mod:`engine.cli.serve` (the server), :mod:`engine.cli.actions`
(the component's actions) with :mod:`engine.cli.tasks` (``run``, ``request``); ``demo`` is
:mod:`engine.demo`, ``bench`` is :mod:`bench.cli`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import trio

from engine.cli.actions import add_action_commands, run_action
from engine.cli.serve import add_serve_command, run_serve
from engine.errors import EngineError
from engine.media.call import TURN_TAKING, SessionConfig

__all__ = ["main"]

QUIET_COMMANDS = {"demo", "bench", "call", "sms", "whatsapp", "run", "request"}
"""Commands whose output is their result: they log warnings and errors only by default."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-engine", description="Low-latency voice AI on Twilio Media Streams."
    )
    parser.add_argument(
        "--log-level",
        help="DEBUG, INFO, WARNING (default: INFO for serve, WARNING for the other commands)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_command(commands)
    demo = commands.add_parser("demo", help="server + emulated Twilio call, no account needed")
    demo.add_argument(
        "--pipeline", default="local", help="pipeline to demo (default local, the offline agent)"
    )
    demo.add_argument(
        "--say",
        default="Hello! I would like to book a table for two people tomorrow evening.",
        help="what the emulated caller says",
    )
    demo.add_argument(
        "--turn",
        choices=TURN_TAKING,
        default=SessionConfig().turn_taking,
        help="how the caller's turn ends, as serve --turn (default %(default)s; the caller is a "
        "synthetic voice, on which Smart Turn is rarely sure: see README)",
    )
    add_action_commands(commands)
    from bench.cli import add_bench_command  # bench sits on top of the engine

    add_bench_command(commands)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = (args.log_level or ("WARNING" if args.command in QUIET_COMMANDS else "INFO")).upper()
    worker = getattr(args, "worker_fds", None) is not None
    logging.basicConfig(
        level=level,
        # Workers of ``serve --workers N`` share stderr: say which one speaks.
        format="%(asctime)s %(levelname)s "
        + ("[%(process)d] " if worker else "")
        + "%(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The level applies to what is printed, whatever level a logger is set to for its own
    # handlers (the demo collects the pipelines' DEBUG transcript lines for itself).
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``voice-engine`` and ``python -m engine``."""
    args = _parser().parse_args(argv)
    _configure_logging(args)
    try:
        if args.command == "serve":
            return run_serve(args, argv)
        if args.command == "demo":
            from engine.demo import run_demo

            return trio.run(run_demo, args.pipeline, args.say, args.turn)
        if args.command == "bench":
            from bench.cli import run_bench

            return run_bench(args)
        return run_action(args)
    except EngineError as exc:
        print(f"voice-engine: {exc}", file=sys.stderr)
        return 2
