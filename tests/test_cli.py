"""The ``voice-engine`` command as a user runs it: refusals, signals, the demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from conftest import ROOT, sentences, spoken
from engine.testing import open_inbound_call


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    if "TWILIO_AUTH_TOKEN" not in (env or {}):
        full_env.pop("TWILIO_AUTH_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )


def test_serve_refuses_to_start_without_an_auth_token() -> None:
    result = run_cli("serve", "--port", "0", timeout=20)
    assert result.returncode == 2
    assert "TWILIO_AUTH_TOKEN" in result.stderr and "--insecure" in result.stderr


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("nonsense", "unknown pipeline"),
        ("no_such_module:create", "cannot import"),
        ("pipelines.echo:missing", "no callable"),
        ("pipelines.echo:Echo.on_audio", "no callable"),
    ],
)
def test_serve_refuses_a_bad_pipeline(pipeline: str, message: str) -> None:
    result = run_cli("serve", "--port", "0", "--pipeline", pipeline, env={"TWILIO_AUTH_TOKEN": "x"})
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_ends_in_flight_calls_cleanly(serve, signum: signal.Signals) -> None:
    server = serve("echo")
    async with open_inbound_call(server.url, server.auth_token) as call:
        await call.say(spoken(sentences()[0])[:8000])
        server.process.send_signal(signum)
        with trio.fail_after(5):
            await call.closed.wait()
    assert call.record.close_code == 1001  # going away
    assert call.record.closed_by_server
    assert await trio.to_thread.run_sync(server.process.wait, 10) == 0
    assert "Traceback" not in server.log()


async def test_insecure_mode_serves_unsigned_calls(serve) -> None:
    server = serve("echo", insecure=True)
    async with open_inbound_call(server.url, None) as call:
        await call.say(spoken(sentences()[1])[:8000])
        await call.pause(0.3)
    assert len(call.record.received) > 0
    assert not call.record.closed_by_server


def test_demo_runs_a_call_end_to_end_with_no_account(tmp_path: Path) -> None:
    result = run_cli("demo", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "caller said:" in result.stdout
    assert "turn latency:" in result.stdout
    heard = next(line for line in result.stdout.splitlines() if line.startswith("caller heard:"))
    assert float(heard.split()[2]) > 1.0  # seconds of reply audio heard
