"""Shared fixtures: real speech, and a real ``voice-engine serve`` in a subprocess."""

from __future__ import annotations

import gzip
import json
import os
import resource
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, settings

from engine.testing import speech
from engine.testing.twilio_api.spec import BUNDLED_SPEC

# Hypothesis profiles. "default" is what plain ``pytest`` (and CI) runs: at most a few hundred
# examples per property, no per-example deadline (a shared 2-core machine is not a stopwatch).
# "fuzz" is the long run over the parsers of untrusted input (``pytest -m fuzz
# --hypothesis-profile=fuzz``, see README "Fuzzing"); tests that are not sans-IO scale their own
# count down from it (see ``fuzz_examples``).
settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile(
    "fuzz",
    max_examples=100_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
FUZZ_PROFILE_EXAMPLES = 100_000


def fuzz_examples(default: int, fuzz: int) -> int:
    """An example count for a slow (not sans-IO) fuzz target: ``fuzz`` under the fuzz profile,
    ``default`` otherwise. Read at import time, after ``--hypothesis-profile`` was applied."""
    return fuzz if settings.default.max_examples >= FUZZ_PROFILE_EXAMPLES else default


DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


def sentences() -> list[str]:
    """The fixed test sentences (tests/data/sentences.txt)."""
    return DATA.joinpath("sentences.txt").read_text().splitlines()


@cache
def spoken(text: str) -> bytes:
    """``text`` spoken by eSpeak NG as 8 kHz μ-law (cached per test session)."""
    return speech(text)


@dataclass
class Server:
    """A running ``voice-engine serve`` subprocess."""

    url: str
    auth_token: str
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        """Everything the server has logged so far."""
        return self.log_path.read_text()


def start_server(
    tmp_path: Path,
    pipeline: str,
    *,
    env: dict[str, str] | None = None,
    insecure: bool = False,
    args: Sequence[str] = (),
    log_level: str = "INFO",
    max_open_files: int | None = None,
) -> Server:
    """Start ``python -m engine serve`` on a free port and wait until it listens
    (``max_open_files``: its hard limit on file descriptors)."""
    token = (env or {}).get("TWILIO_AUTH_TOKEN") or secrets.token_hex(16)
    log_path = tmp_path / f"server-{secrets.token_hex(4)}.log"
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    full_env.pop("PUBLIC_URL", None)
    if insecure:
        full_env.pop("TWILIO_AUTH_TOKEN", None)
    else:
        full_env["TWILIO_AUTH_TOKEN"] = token
    command = [sys.executable, "-m", "engine", "--log-level", log_level, "serve", "--port", "0"]
    command += ["--pipeline", pipeline]
    command += args
    if insecure:
        command.append("--insecure")
    log_file = log_path.open("w")
    limit = None
    if max_open_files is not None:
        limit = partial(
            resource.setrlimit, resource.RLIMIT_NOFILE, (max_open_files, max_open_files)
        )
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        env=full_env,
        cwd=ROOT,
        preexec_fn=limit,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("voice-engine serving on "):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}\n{log_path.read_text()}")
    # The rest of stdout (a JSON line per trigger) must be read, or the pipe fills up.
    threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
    return Server(line.split()[-1], token, process, log_path)


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


def stop_server(server: Server) -> int:
    """SIGTERM the server and return its exit code."""
    server.process.terminate()
    try:
        return server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers for a test; all are stopped (and must exit cleanly) at its end."""
    servers: list[Server] = []

    def _start(pipeline: str, **kwargs: object) -> Server:
        server = start_server(tmp_path, pipeline, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield _start
    for server in servers:
        if server.process.poll() is None:
            assert stop_server(server) == 0, server.log()


SPEC_PATH = BUNDLED_SPEC
"""Twilio's OpenAPI description, as vendored in the package (gzipped)."""


@cache
def spec_json() -> dict[str, Any]:
    """Twilio's OpenAPI description, parsed (once per test session)."""
    return json.loads(gzip.decompress(SPEC_PATH.read_bytes()))  # type: ignore[no-any-return]
