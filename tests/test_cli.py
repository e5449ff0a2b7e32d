"""The ``voice-engine`` command as a user runs it: refusals, signals, the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from conftest import ROOT, SPEC_PATH, sentences, spoken
from engine.testing import (
    CalleeBehaviour,
    TwilioEmulator,
    open_inbound_call,
    open_twilio_emulator,
    ring,
)


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
    # A short drain and no notice: the calls are closed "going away" (see test_shutdown.py for
    # the drain and the spoken notice).
    server = serve("echo", args=["--drain-timeout", "0.5", "--shutdown-notice", ""])
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
    heard_line = next(
        line for line in result.stdout.splitlines() if line.startswith("engine heard")
    )
    # The offline agent transcribed the caller (pocketsphinx on phone audio is rough: any of
    # the sentence's content words will do).
    assert {"book", "table", "two", "people"} & set(heard_line.lower().split())
    assert any(line.startswith("engine reply") for line in result.stdout.splitlines())
    heard = next(line for line in result.stdout.splitlines() if line.startswith("caller heard:"))
    assert float(heard.split()[2]) > 1.0  # seconds of reply audio heard
    assert "(end of turn: Smart Turn asked from 300 ms of silence" in result.stdout


def test_demo_turn_vad_ends_the_turn_by_the_silence_rule() -> None:
    result = run_cli("demo", "--pipeline", "turn-echo", "--turn", "vad", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "(end of turn: 500 ms of silence)" in result.stdout
    sent = next(line for line in result.stdout.splitlines() if line.startswith("turn latency:"))
    # The reply leaves about one hangover after the end of speech (by frame energy).
    assert 400 <= float(sent.split()[-2]) <= 900


async def run_action_cli(
    emulator: TwilioEmulator, *args: str
) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TWILIO_ACCOUNT_SID": emulator.account_sid,
        "TWILIO_AUTH_TOKEN": emulator.auth_token,
        "TWILIO_API_BASE_URL": emulator.base_url,
    }
    env.pop("PUBLIC_URL", None)
    return await trio.run_process(
        [sys.executable, "-m", "engine", "--log-level", "WARNING", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )


async def test_sms_and_whatsapp_commands_print_the_output_object() -> None:
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        sms = await run_action_cli(
            emulator, "sms", "--to", "+14155552671", "--from", "+15005550006", "--body", "Hi"
        )
        assert sms.returncode == 0, sms.stderr
        output = json.loads(sms.stdout)
        assert output["sid"] in emulator.messages and output["from"] == {
            "rawNumber": "+15005550006"
        }
        template = await run_action_cli(
            emulator,
            "whatsapp",
            "--to",
            "+14155552671",
            "--from",
            "+15005550006",
            "--content-sid",
            "HX" + "b" * 32,
            "--content-variables",
            '{"1": "Ana"}',
        )
        assert template.returncode == 0, template.stderr
        form = dict(emulator.messages[json.loads(template.stdout)["sid"]].form)
        assert form["ContentVariables"] == '{"1": "Ana"}'
        assert form["To"] == "whatsapp:+14155552671"


async def test_action_errors_print_twilios_code_and_exit_non_zero() -> None:
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        invalid = await run_action_cli(
            emulator, "sms", "--to", "+15005550001", "--from", "+15005550006", "--body", "Hi"
        )
        assert invalid.returncode == 1
        assert b"21211" in invalid.stderr and invalid.stdout == b""
        bad_number = await run_action_cli(
            emulator, "sms", "--to", "12345", "--from", "+15005550006", "--body", "Hi"
        )
        assert bad_number.returncode == 2 and b"To" in bad_number.stderr


async def test_call_command_places_a_call_and_prints_its_outcome() -> None:
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        emulator.callee("+14155552671", CalleeBehaviour(hang_up_after=1.0))
        result = await run_action_cli(
            emulator,
            "call",
            "--to",
            "+14155552671",
            "--from",
            "+15005550006",
            "--pipeline",
            "echo",
            "--port",
            "0",
        )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["status"] == "completed" and output["direction"] == "outbound-api"
    call = emulator.calls[output["callSid"]]
    assert call.record is not None and call.record.frames_sent > 0


async def test_a_stdout_nobody_reads_does_not_stall_the_server(tmp_path: Path) -> None:
    # serve prints a JSON line per inboundCall trigger; with its stdout a pipe nobody drains,
    # the pipe fills after a few hundred calls. Calls and webhooks must go on regardless.
    token = "stdout-test-token"
    env = {**os.environ, "TWILIO_AUTH_TOKEN": token, "PYTHONPATH": str(ROOT)}
    env.pop("PUBLIC_URL", None)
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(  # noqa: ASYNC220 — a raw pipe, deliberately never drained
        [sys.executable, "-m", "engine", "serve", "--port", "0", "--pipeline", "echo"],
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().decode().split()[-1]  # then never read again
        async with httpx.AsyncClient(timeout=5) as http:
            caller = "+1" + "5" * 4000  # a long From makes each trigger line ≈ 4 KB
            for _ in range(60):  # ≈ 240 KB of trigger lines: well past a 64 KiB pipe
                await ring(url, token, client=http, from_number=caller)
            health = await http.get(f"{url}/healthz")
        assert health.status_code == 200
        async with open_inbound_call(url, token) as call:
            await call.say(spoken(sentences()[0])[:8000])
            await call.pause(0.3)
        assert len(call.record.received) > 0  # media still flows
    finally:
        process.kill()
        process.wait()
        log.close()
