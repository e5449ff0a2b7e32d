"""``voice-engine serve``: the server from the shell, one process or ``--workers N``."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, Literal

import trio

from engine.admission import AdmissionConfig
from engine.errors import ConfigError
from engine.loader import BUNDLED, load_stage_factory
from engine.media.session import TURN_TAKING, SessionConfig
from engine.media.vad import TurnConfig
from engine.server import ServerConfig, TriggerHandler, Triggers, VoiceServer

__all__ = ["add_serve_command", "run_serve"]

log = logging.getLogger("engine")


def add_serve_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the CLI."""
    serve = commands.add_parser("serve", help="run the voice server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8080, help="port to bind (default 8080; 0 = any)"
    )
    serve.add_argument(
        "--public-url",
        default=os.environ.get("PUBLIC_URL"),
        help="base URL Twilio requests, e.g. https://x.example (env PUBLIC_URL; "
        "default http://HOST:PORT)",
    )
    serve.add_argument(
        "--pipeline",
        default="turn-echo",
        help=f"{' | '.join(BUNDLED)} | module:factory (default turn-echo)",
    )
    serve.add_argument(
        "--media-port",
        type=int,
        help="also accept media streams on this port (0 = any), for deployments that route "
        "them separately; by default they share --port",
    )
    serve.add_argument(
        "--media-url",
        help="public wss:// URL of the media port when a proxy routes /twilio/media to it",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="run without TWILIO_AUTH_TOKEN: no webhook signature checks (local use only)",
    )
    serve.add_argument(
        "--turn",
        choices=TURN_TAKING,
        default=SessionConfig().turn_taking,
        help="how the caller's turn ends: vad, after --hangover-ms of silence; smart-turn, when "
        "the Smart Turn v3 model (asked at each pause, on worker threads) says the caller has "
        "finished, or by the VAD rule when it is saturated (default %(default)s; see README)",
    )
    serve.add_argument(
        "--turn-threads",
        type=int,
        metavar="N",
        help="worker threads for Smart Turn, per worker process (default: the cores but one; "
        "they run at a lower CPU priority than the media loop)",
    )
    serve.add_argument(
        "--hangover-ms",
        type=int,
        default=TurnConfig().hangover_ms,
        help="silence that ends the caller's turn, in ms: the VAD rule (default %(default)s)",
    )
    serve.add_argument(
        "--max-calls",
        type=_max_calls,
        default="auto",
        metavar="N|auto|unlimited",
        help="refuse new calls beyond this many at once, per worker; auto (the default) sizes "
        "the ceiling from the CPU a call's frames cost on this machine (see README)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        help="connections open at once, per worker (default: from the file descriptor limit)",
    )
    serve.add_argument(
        "--max-loop-lag",
        type=float,
        metavar="MS",
        help="refuse new calls while the event loop lags more than MS milliseconds",
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, seconds calls in flight may run on before they are ended with a "
        "spoken notice (default 30)",
    )
    serve.add_argument(
        "--shutdown-notice",
        default="We are sorry, this call has to end now. Goodbye.",
        help="what calls still running at the end of the drain hear ('' for none)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port(s) (default 1)",
    )
    serve.add_argument("--worker-fds", help=argparse.SUPPRESS)  # set by --workers
    serve.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)  # set by --workers


def run_serve(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Run ``serve`` as parsed into ``args``; the exit code."""
    if args.workers > 1:
        return _run_workers(args, argv)
    http_fd, media_fd = _worker_fds(args.worker_fds)
    config = ServerConfig(
        stage_factory=load_stage_factory(args.pipeline),
        pipelines=frozenset(BUNDLED) | {args.pipeline},
        auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        insecure=args.insecure,
        media_port=args.media_port,
        media_url=args.media_url,
        http_fd=http_fd,
        media_fd=media_fd,
        previous_auth_tokens=_previous_tokens(),
        max_connections=args.max_connections,
        admission=AdmissionConfig(
            max_calls=args.max_calls,
            max_loop_lag=args.max_loop_lag / 1000 if args.max_loop_lag else None,
        ),
        session=SessionConfig(
            turn=_turn_config(args.hangover_ms),
            turn_taking=args.turn,
            turn_threads=args.turn_threads,
        ),
        drain_timeout=args.drain_timeout,
        shutdown_notice=args.shutdown_notice or None,
        triggers=Triggers(
            inbound_call=_print_trigger("inboundCall"),
            whatsapp_message=_print_trigger("newWhatsappMessage"),
        ),
    )
    trio.run(_serve, VoiceServer(config), args.ready_fd)
    return 0


def _max_calls(value: str) -> int | Literal["auto"] | None:
    if value == "auto":
        return "auto"
    if value in ("unlimited", "none"):
        return None
    try:
        calls = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number, auto or unlimited: {value!r}") from None
    if calls < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, not {calls}")
    return calls


def _turn_config(hangover_ms: int) -> TurnConfig:
    try:
        return TurnConfig(hangover_ms=hangover_ms)
    except ValueError as exc:
        raise ConfigError(f"--hangover-ms: {exc}") from None


def _worker_fds(value: str | None) -> tuple[int | None, int | None]:
    if not value:
        return None, None
    fds = [int(fd) for fd in value.split(",")]
    return fds[0], fds[1] if len(fds) > 1 else None


def _previous_tokens() -> tuple[str, ...]:
    """Auth Tokens still accepted while a rotation settles (``TWILIO_AUTH_TOKEN_PREVIOUS``,
    comma-separated)."""
    value = os.environ.get("TWILIO_AUTH_TOKEN_PREVIOUS", "")
    return tuple(token.strip() for token in value.split(",") if token.strip())


def _run_workers(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from engine.workers import WorkerPlan, run_workers

    # Every worker runs ``serve`` with the same options, minus the ones the parent sets.
    own = {"--workers", "--host", "--port", "--public-url", "--media-port", "--media-url"}
    given = list(sys.argv[1:] if argv is None else argv)
    serve_args = given[given.index("serve") + 1 :]
    kept: list[str] = []
    skip = False
    for item in serve_args:
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0]
        if name in own or name == "--insecure":
            skip = name != "--insecure" and "=" not in item
            continue
        kept.append(item)
    return run_workers(
        WorkerPlan(
            count=args.workers,
            host=args.host,
            port=args.port,
            media_port=args.media_port,
            public_url=args.public_url,
            media_url=args.media_url,
            insecure=args.insecure,
            serve_args=kept,
            log_level=args.log_level or "INFO",
        )
    )


FULL_COLLECTION_EVERY = 1000
"""Middle-generation collections between two full ones (CPython's default is 10)."""


def _settle_gc() -> None:
    """Keep the garbage collector's pauses out of the frames' way.

    Objects alive once the server is up never die: they are frozen, so no collection scans
    them again. A full collection scans every live call's objects — tens of milliseconds at a
    few hundred calls, a late frame on every call — so it comes 100 times less often than
    CPython's default; young garbage is collected as usual.
    """
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def _print_trigger(name: str) -> TriggerHandler:
    """A trigger handler that prints ``{"trigger": name, "output": {...}}`` as a JSON line."""

    async def handler(output: dict[str, Any]) -> None:
        line = json.dumps({"trigger": name, "output": output}, ensure_ascii=False)
        # Written from a worker thread: a stdout nobody reads (a full pipe) must stall only the
        # trigger handlers (their number is bounded), never the event loop and every call on it.
        await trio.to_thread.run_sync(_print_line, line)

    return handler


def _print_line(line: str) -> None:
    print(line, flush=True)


async def _serve(server: VoiceServer, ready_fd: int | None = None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("received %s: ending calls", signal.Signals(signum).name)
                    server.shutdown()
                    return

            async def run(task_status: trio.TaskStatus[str]) -> None:
                await server.serve(task_status=task_status)
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            url = await nursery.start(run)
            _settle_gc()
            if ready_fd is None:
                print(f"voice-engine serving on {url}", flush=True)
            else:  # a worker of ``serve --workers N``: its parent announces the server
                log.info("worker %d serving on %s", os.getpid(), url)
                os.write(ready_fd, b"1")
                os.close(ready_fd)
