"""The processes of a benchmark: a pinned server, a pinned load generator, and /proc readings.

What the generator calls is an :class:`Endpoint`: the server this bench started (its voice
webhook, its process for CPU and memory, its ``/metrics``), or any Media Streams server given
by URL (``voice-engine bench --target``), with the processes to watch if its PIDs are known.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "WEBHOOK_PATH",
    "Endpoint",
    "GeneratorError",
    "Server",
    "cpu_seconds",
    "process_tree",
    "rss_bytes",
    "run_generator",
    "start_server",
    "tree_cpu_seconds",
    "tree_rss_bytes",
    "usable_cpus",
]

WEBHOOK_PATH = "/twilio/voice"
"""The engine's voice webhook."""


def usable_cpus() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def process_tree(pids: Iterable[int]) -> list[int]:
    """``pids`` and every live descendant of them (a server's worker processes), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo += children.get(pid, [])
    return found


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time of ``pids`` and their descendants (processes gone meanwhile count as 0)."""
    total = 0.0
    for pid in process_tree(pids):
        with contextlib.suppress(OSError, IndexError, ValueError):  # it ended meanwhile
            total += cpu_seconds(pid)
    return total


def tree_rss_bytes(pids: Sequence[int]) -> int:
    """Resident memory of ``pids`` and their descendants."""
    total = 0
    for pid in process_tree(pids):
        with contextlib.suppress(OSError, ValueError):  # it ended meanwhile
            total += rss_bytes(pid)
    return total


@dataclass(frozen=True)
class Endpoint:
    """What the load generator calls, and what the bench may watch of it."""

    url: str
    """A voice webhook (``http(s)://…``, called as Twilio calls it) or a stream
    (``ws(s)://…``, dialled directly)."""
    auth_token: str | None = None
    """Signs the webhook and the stream handshake as Twilio does; ``None``: unsigned."""
    parameters: Mapping[str, str] = field(default_factory=dict)
    """``customParameters`` of a stream dialled directly."""
    pids: tuple[int, ...] = ()
    """Processes whose CPU and memory are the target's (with their descendants)."""
    metrics_url: str | None = None
    """Where a voice-engine server's Prometheus ``/metrics`` is, if known."""
    ca_file: str | None = None
    """A CA to trust for TLS (PEM), besides the system's."""
    insecure_tls: bool = False
    """Do not check the target's TLS certificate."""
    setup_timeout: float | None = None
    """A webhook answer or handshake later than this (s) fails the call (``None``: the
    generator's default, 10 s)."""

    @property
    def is_stream(self) -> bool:
        """Whether the URL is a stream dialled directly (no webhook)."""
        return self.url.startswith(("ws://", "wss://"))


@dataclass
class Server:
    """A ``voice-engine serve`` process."""

    process: subprocess.Popen[str]
    url: str
    auth_token: str
    cpu: int | None

    @property
    def endpoint(self) -> Endpoint:
        """Its voice webhook, its process and its ``/metrics``."""
        return Endpoint(
            self.url + WEBHOOK_PATH,
            self.auth_token,
            pids=(self.process.pid,),
            metrics_url=self.url,
        )

    def stop(self) -> int:
        """SIGTERM it and wait."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_server(
    pipeline: str,
    *,
    cpu: int | None,
    log: Path,
    media_listener: bool = False,
    hangover_ms: int | None = None,
    turn: str | None = None,
    extra: Sequence[str] = (),
) -> Server:
    """Start ``python -m engine serve`` pinned to ``cpu`` and wait until it listens.

    The server is the default one — webhooks and media on one port, admission control on —
    unless asked otherwise: ``media_listener`` also takes media on a port of its own
    (``--media-port``), ``turn`` how turns end (``--turn vad|smart-turn``; default: the
    server's, Smart Turn), ``hangover_ms`` the VAD rule's silence (``--hangover-ms``), ``extra``
    arguments are added to ``serve``'s (e.g. ``--max-calls``).
    """
    token = secrets.token_hex(16)
    env = {**os.environ, "TWILIO_AUTH_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    env.pop("PUBLIC_URL", None)
    args = [sys.executable, "-m", "engine", "--log-level", "WARNING", "serve", "--port", "0"]
    if hangover_ms is not None:
        args += ["--hangover-ms", str(hangover_ms)]
    if turn is not None:
        args += ["--turn", turn]
    args += ["--pipeline", pipeline]
    if media_listener:
        args += ["--media-port", "0"]
    args += extra
    log_file = log.open("a")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log_file, text=True, env=env)
    if cpu is not None:
        os.sched_setaffinity(process.pid, {cpu})
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("voice-engine serving on "):
        process.kill()
        raise RuntimeError(f"the server did not start: {line!r} (see {log})")
    # The server prints every trigger (a JSON line per inbound call): keep its pipe drained.
    threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
    return Server(process, line.split()[-1], token, cpu)


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


class GeneratorError(RuntimeError):
    """The load generator itself failed (not a call: those are counted in its result)."""


def run_generator(
    target: Server | Endpoint,
    calls: int,
    duration: float,
    *,
    cpu: int | None,
    audio: Path,
    burst: bool = False,
    webhook_concurrency: int | None = None,
    processes: int = 1,
    cpus: Sequence[int] = (),
    record_replies: bool = False,
) -> dict[str, Any]:
    """Run ``python -m bench.loadgen`` pinned to ``cpu`` against ``target``; its JSON result.

    ``burst`` starts every call at once (at most ``webhook_concurrency`` setting up at a time);
    ``processes`` > 1 splits the calls over that many generator processes pinned to ``cpus``;
    ``record_replies`` adds each call's timeline (``call_records``). Raises
    :class:`GeneratorError` if the generator fails or outlives its time.
    """
    endpoint = target.endpoint if isinstance(target, Server) else target
    args = [sys.executable, "-m", "bench.loadgen", "--url", endpoint.url, "--webhook-path", ""]
    if endpoint.auth_token:
        args += ["--token", endpoint.auth_token]
    args += ["--calls", str(calls), "--duration", str(duration), "--audio", str(audio)]
    for name, value in endpoint.parameters.items():
        args += ["--param", f"{name}={value}"]
    if endpoint.ca_file:
        args += ["--ca-file", endpoint.ca_file]
    if endpoint.insecure_tls:
        args.append("--insecure-tls")
    if burst:
        args.append("--burst")
    if webhook_concurrency is not None:
        args += ["--webhook-concurrency", str(webhook_concurrency)]
    if endpoint.setup_timeout is not None:
        args += ["--setup-timeout", str(endpoint.setup_timeout)]
    if record_replies:
        args.append("--record-replies")
    if processes > 1:
        args += ["--processes", str(processes), "--cpus", ",".join(map(str, cpus))]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if cpu is not None and processes <= 1:
        os.sched_setaffinity(process.pid, {cpu})
    # Every call ends by itself (setup timeouts, the stop timeout); this is a last resort.
    limit = duration * 3 + 120 + (calls * 0.05 if burst else calls * 0.01)
    try:
        out, err = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise GeneratorError(f"the load generator ran over {limit:.0f} s and was killed") from None
    if process.returncode != 0:
        tail = err.strip().splitlines()[-1:] if err else []
        raise GeneratorError(f"load generator failed ({process.returncode}): {' '.join(tail)}")
    result: dict[str, Any] = json.loads(out)
    return result
