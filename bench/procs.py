"""The processes of a benchmark: a pinned server, a pinned load generator, and /proc readings."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "Server",
    "cpu_seconds",
    "rss_bytes",
    "run_generator",
    "start_server",
    "usable_cpus",
]


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


@dataclass
class Server:
    """A ``voice-engine serve`` process."""

    process: subprocess.Popen[str]
    url: str
    auth_token: str
    cpu: int | None

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
    media_listener: bool,
    log: Path,
    hangover_ms: int | None = None,
    extra: Sequence[str] = (),
) -> Server:
    """Start ``python -m engine serve`` pinned to ``cpu`` and wait until it listens.

    ``hangover_ms`` sets the turn detector's end-of-turn hangover (``--hangover-ms``).
    ``extra`` arguments are added to ``serve``'s (e.g. ``--max-calls``).
    """
    token = secrets.token_hex(16)
    env = {**os.environ, "TWILIO_AUTH_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    env.pop("PUBLIC_URL", None)
    args = [sys.executable, "-m", "engine", "--log-level", "WARNING", "serve", "--port", "0"]
    if hangover_ms is not None:
        args += ["--hangover-ms", str(hangover_ms)]
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


def run_generator(
    server: Server,
    calls: int,
    duration: float,
    *,
    cpu: int | None,
    audio: Path,
    burst: bool = False,
    webhook_concurrency: int | None = None,
    processes: int = 1,
    cpus: Sequence[int] = (),
) -> dict[str, object]:
    """Run ``python -m bench.loadgen`` pinned to ``cpu``; return its JSON result.

    ``burst`` starts every call at once (at most ``webhook_concurrency`` setting up at a time);
    ``processes`` > 1 splits the calls over that many generator processes pinned to ``cpus``.
    """
    args = [sys.executable, "-m", "bench.loadgen", "--url", server.url, "--token"]
    args += [server.auth_token, "--calls", str(calls), "--duration", str(duration)]
    args += ["--audio", str(audio)]
    if burst:
        args.append("--burst")
    if webhook_concurrency is not None:
        args += ["--webhook-concurrency", str(webhook_concurrency)]
    if processes > 1:
        args += ["--processes", str(processes), "--cpus", ",".join(map(str, cpus))]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    if cpu is not None and processes <= 1:
        os.sched_setaffinity(process.pid, {cpu})
    out, _ = process.communicate(timeout=duration * 3 + 120)
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed ({process.returncode})")
    result: dict[str, object] = json.loads(out)
    return result
