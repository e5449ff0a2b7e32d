"""``voice-engine serve --workers N``: N server processes sharing one port (or two).

The parent binds the listening sockets once and hands them to N worker processes, each a plain
``voice-engine serve`` on the inherited socket; the kernel spreads new connections over them.
Workers share nothing of their own: a call's webhook, media socket and status callbacks may
each land on a different worker (stream tokens are keyed by the Auth Token, ``makeCall`` falls
back to polling Twilio). Metrics are summed across workers through ``PROMETHEUS_MULTIPROC_DIR``.

SIGTERM or SIGINT to the parent is passed on to every worker, which drains as ``serve`` does;
a worker that dies on its own is restarted.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from engine.errors import ConfigError

__all__ = ["WorkerPlan", "run_workers"]

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What the parent needs to start the workers."""

    count: int
    host: str
    port: int
    media_port: int | None
    public_url: str | None
    media_url: str | None
    insecure: bool
    serve_args: Sequence[str]
    """The ``serve`` arguments every worker gets, besides the socket and URL ones."""
    log_level: str = "INFO"


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def run_workers(plan: WorkerPlan) -> int:
    """Bind, start ``plan.count`` workers, keep them running until a signal; the exit code."""
    if plan.count < 1:
        raise ConfigError(f"--workers must be ≥ 1, not {plan.count}")
    http = _listen(plan.host, plan.port)
    media = _listen(plan.host, plan.media_port) if plan.media_port is not None else None
    port = http.getsockname()[1]
    public_url = plan.public_url or f"http://{plan.host}:{port}"
    media_url = plan.media_url
    if media is not None and media_url is None and plan.public_url is None:
        # Local use: Twilio (the emulator) dials the media port directly. Behind a proxy (a
        # public URL), the stream URL follows it, as with one process, unless --media-url.
        media_url = f"ws://{plan.host}:{media.getsockname()[1]}/twilio/media"
    metrics_dir = tempfile.mkdtemp(prefix="voice-engine-metrics-")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
    if plan.insecure:
        from engine.server import INSECURE_SECRET_ENV

        env.setdefault(INSECURE_SECRET_ENV, secrets.token_urlsafe(32))
    fds = [http.fileno()] + ([media.fileno()] if media is not None else [])
    command = [
        sys.executable,
        "-m",
        "engine",
        "--log-level",
        plan.log_level,
        "serve",
        *plan.serve_args,
        "--host",
        plan.host,
        "--port",
        str(port),
        "--public-url",
        public_url,
        "--worker-fds",
        ",".join(map(str, fds)),
    ]
    if media is not None:
        command += ["--media-port", str(media.getsockname()[1])]
    if media_url is not None:
        command += ["--media-url", media_url]
    if plan.insecure:
        command.append("--insecure")
    try:
        return trio.run(_supervise, plan.count, command, env, fds, public_url)
    finally:
        http.close()
        if media is not None:
            media.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _supervise(
    count: int, command: list[str], env: dict[str, str], fds: list[int], public_url: str
) -> int:
    from engine.metrics import mark_process_dead

    stopping = False
    running: dict[int, trio.Process] = {}

    async def keep(index: int, ready: trio.MemorySendChannel[int]) -> None:
        async with ready:
            while not stopping:
                read_fd, write_fd = os.pipe()
                try:
                    process = await trio.lowlevel.open_process(
                        [*command, "--ready-fd", str(write_fd)],
                        env=env,
                        pass_fds=(*fds, write_fd),
                    )
                finally:
                    os.close(write_fd)
                running[index] = process
                if stopping:  # the signal came while this one was starting
                    process.send_signal(signal.SIGTERM)
                async with trio.lowlevel.FdStream(read_fd) as pipe:
                    if await pipe.receive_some(1):
                        ready.send_nowait(process.pid)
                code = await process.wait()
                del running[index]
                mark_process_dead(process.pid)
                if not stopping:
                    log.error(
                        "worker %d (pid %d) exited with %s; restarting", index, process.pid, code
                    )
                    await trio.sleep(RESTART_DELAY)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            send_ready, receive_ready = trio.open_memory_channel[int](count)
            async with send_ready:
                for index in range(count):
                    nursery.start_soon(keep, index, send_ready.clone())

            async def announce() -> None:
                started = 0
                async for _pid in receive_ready:
                    started += 1
                    if started == count:
                        log.info("%d workers ready", count)
                        print(f"voice-engine serving on {public_url}", flush=True)

            nursery.start_soon(announce)
            async for signum in signals:
                log.info("received %s: draining %d worker(s)", signal.Signals(signum).name, count)
                stopping = True
                for process in running.values():
                    process.send_signal(signal.SIGTERM)
                break
    return 0
