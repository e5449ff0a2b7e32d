"""``voice-engine run`` (the documentation's task objects), ``voice-engine request`` (the custom
action) and the action commands' fixes, run as a user runs them, against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from conftest import ROOT, SPEC_PATH
from engine.testing import CalleeBehaviour, TwilioEmulator, open_twilio_emulator

FROM = "+15005550006"
CALLEE = "+14155552671"
TEMPLATE = "HX" + "b" * 32
MESSAGE_KEYS = {
    "body",
    "numSegments",
    "direction",
    "from",
    "to",
    "dateUpdated",
    "price",
    "errorMessage",
    "uri",
    "accountSid",
    "numMedia",
    "status",
    "messagingServiceSid",
    "sid",
    "dateSent",
    "dateCreated",
    "errorCode",
    "currency",
    "apiVersion",
    "subresourceUris",
}


def environment(emulator: TwilioEmulator, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "TWILIO_ACCOUNT_SID": emulator.account_sid,
        "TWILIO_AUTH_TOKEN": emulator.auth_token,
        "TWILIO_API_BASE_URL": emulator.base_url,
        **extra,
    }
    env.pop("PUBLIC_URL", None)
    env.pop("TWILIO_API_KEY", None)
    return env


async def cli(
    emulator: TwilioEmulator, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "engine", *args],
        stdin=stdin.encode() if stdin is not None else b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=environment(emulator),
    )


def task(action: str, **parameters: Any) -> dict[str, Any]:
    return {
        "label": action,
        "name": action,
        "parameters": parameters,
        "type": f"twilio/v1/{action}",
    }


async def test_run_takes_the_documented_task_from_stdin_a_file_or_inline(tmp_path: Path) -> None:
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        sms = await cli(
            emulator,
            "run",
            "-",
            stdin=json.dumps(task("sendSMS", To=CALLEE, From=FROM, Body="Hi")),
        )
        assert sms.returncode == 0, sms.stderr
        output = json.loads(sms.stdout)
        assert set(output) == MESSAGE_KEYS and output["from"] == {"rawNumber": FROM}
        assert isinstance(output["numSegments"], str)
        assert set(output["dateCreated"]) == {"dateTime", "zoneId"}

        template = tmp_path / "template.json"
        template.write_text(
            json.dumps(
                task(
                    "sendWhatsAppMessage",
                    To=CALLEE,
                    From=FROM,
                    useTemplate=True,
                    ContentSid=TEMPLATE,
                    ContentVariables={"1": "Ana"},
                    Body="",
                )
            )
        )
        whatsapp = await cli(emulator, "run", str(template))
        assert whatsapp.returncode == 0, whatsapp.stderr
        sent = json.loads(whatsapp.stdout)
        assert set(sent) == MESSAGE_KEYS and sent["to"] == "whatsapp:" + CALLEE
        assert dict(emulator.messages[sent["sid"]].form)["ContentVariables"] == '{"1": "Ana"}'

        emulator.open_whatsapp_session("whatsapp:" + CALLEE)
        free_text = task(
            "sendWhatsAppMessage",
            To=CALLEE,
            From=FROM,
            useTemplate=False,
            ContentSid="",
            ContentVariables={},
            Body="Hola",
        )
        text = await cli(emulator, "run", "-", stdin=json.dumps(free_text))
        assert text.returncode == 0, text.stderr
        assert set(json.loads(text.stdout)) == MESSAGE_KEYS

        inline = json.dumps(
            task("customAction", method="GET", path=f"Messages/{output['sid']}.json")
        )
        custom = await cli(emulator, "run", inline)
        assert custom.returncode == 0, custom.stderr
        assert json.loads(custom.stdout)["sid"] == output["sid"]


async def test_run_a_make_call_task() -> None:
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        emulator.callee(CALLEE, CalleeBehaviour(hang_up_after=1.0))
        made = await cli(
            emulator,
            "run",
            "--port",
            "0",
            "-",
            stdin=json.dumps(
                task(
                    "makeCall",
                    To=CALLEE,
                    From=FROM,
                    subWorkflow="echo",
                    timeout=20,
                    maxDuration=2,
                )
            ),
        )
    assert made.returncode == 0, made.stderr
    output = json.loads(made.stdout)
    assert {key: type(value) for key, value in output.items()} == {
        "callSid": str,
        "status": str,
        "duration": int,
        "direction": str,
    }
    assert output["status"] == "completed" and output["direction"] == "outbound-api"
    call = emulator.calls[output["callSid"]]
    assert (call.param("Timeout"), call.param("TimeLimit")) == ("20", "120")


@pytest.mark.parametrize(
    ("given", "parameter"),
    [
        (task("sendSMS", To=CALLEE, From=FROM), "Body"),
        (task("sendSMS", To=CALLEE, From=FROM, Body=7), "Body"),
        (task("sendSMS", To="4155552671", From=FROM, Body="x"), "To"),
        (
            task("sendWhatsAppMessage", To=CALLEE, From=FROM, useTemplate="no", Body="x"),
            "useTemplate",
        ),
        (task("sendWhatsAppMessage", To=CALLEE, From=FROM, useTemplate=True), "ContentSid"),
        (task("makeCall", To=CALLEE, From=FROM), "subWorkflow"),
        (task("makeCall", To=CALLEE, From=FROM, subWorkflow="echo", timeout="9"), "timeout"),
        (task("makeCall", To=CALLEE, From=FROM, subWorkflow="nope.nope:create"), "subWorkflow"),
        ({**task("sendSMS"), "type": "twilio/v1/sendFax"}, "type"),
        ("not json", "TASK"),
    ],
)
async def test_run_names_a_bad_parameter_exits_2_and_sends_nothing(
    given: object, parameter: str
) -> None:
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        text = given if isinstance(given, str) else json.dumps(given)
        result = await cli(emulator, "run", "-", stdin=text)
        assert result.returncode == 2
        assert result.stdout == b""
        assert f"invalid input: {parameter}: ".encode() in result.stderr, result.stderr
        assert emulator.requests == []


async def test_request_is_the_custom_action_on_the_command_line() -> None:
    # Defect 5: there was no CLI for the custom action.
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        posted = await cli(
            emulator,
            "request",
            "POST",
            "Messages.json",
            "--data",
            f"To={CALLEE}",
            "-d",
            f"From={FROM}",
            "--data",
            "Body=a=b",  # the first = splits
        )
        assert posted.returncode == 0, posted.stderr
        created = json.loads(posted.stdout)  # Twilio's own JSON, snake_case
        assert created["body"] == "a=b" and created["num_segments"] == "1"

        listed = await cli(emulator, "request", "GET", "Messages.json", "--data", "PageSize=5")
        assert listed.returncode == 0, listed.stderr
        assert [m["sid"] for m in json.loads(listed.stdout)["messages"]] == [created["sid"]]
        assert emulator.requests[-1].query == "PageSize=5"

        missing = await cli(emulator, "request", "GET", "Messages/SM" + "0" * 32 + ".json")
        assert missing.returncode == 1 and missing.stdout == b""
        assert b"Twilio error 20404" in missing.stderr

        elsewhere = await cli(emulator, "request", "GET", "https://example.com/steal")
        assert elsewhere.returncode == 2 and b"path" in elsewhere.stderr

        as_json = await cli(emulator, "request", "POST", "Messages.json", "--json", "-d", "A=1")
        assert as_json.returncode == 1  # the 2010 API takes forms: Twilio refuses, with its code
        (body, _), *rest = emulator.requests[-1].form
        assert json.loads(body) == {"A": "1"} and rest == []  # the body went as JSON


async def test_whatsapp_variables_with_free_text_are_refused_not_dropped() -> None:
    # Defect 3: --content-variables beside --body was silently dropped.
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        emulator.open_whatsapp_session("whatsapp:" + CALLEE)
        result = await cli(
            emulator,
            "whatsapp",
            "--to",
            CALLEE,
            "--from",
            FROM,
            "--body",
            "Hola",
            "--content-variables",
            '{"1": "Ana"}',
        )
        assert result.returncode == 2, result.stdout
        assert b"ContentVariables" in result.stderr
        assert emulator.requests == []


async def test_sms_command_takes_a_sender_id() -> None:
    # Defect 4, on the command line.
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        result = await cli(emulator, "sms", "--to", CALLEE, "--from", "Acme", "--body", "Hi")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["from"] == {"rawNumber": "Acme"}


async def test_call_prints_its_outcome_as_the_call_ends_not_once_its_server_stopped(
    tmp_path: Path,
) -> None:
    # Defect 2: the outcome waited for the command's server to shut down. Here the pipeline
    # cleans up for 3 s after the call (shielded, as a stage saving its transcript might): the
    # outcome must be out before that cleanup is done, and the command still ends cleanly.
    marker = tmp_path / "cleaned-up"
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        emulator.callee(CALLEE, CalleeBehaviour(hang_up_after=0.5))
        env = environment(emulator, CLEANUP_MARKER=str(marker), CLEANUP_SECONDS="3")
        command = [sys.executable, "-m", "engine", "call", "--to", CALLEE, "--from", FROM]
        command += ["--pipeline", "slow_cleanup_stage:create", "--port", "0"]
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, env=env)
        try:
            assert process.stdout is not None
            received = b""
            with trio.fail_after(60):  # a hang guard, not a stopwatch
                while True:
                    chunk = await process.stdout.receive_some()
                    assert chunk, "the command ended without printing its outcome"
                    received += chunk
                    try:
                        output = json.loads(received)
                        break
                    except ValueError:
                        continue
            cleaned_up_before_output = marker.exists()
            with trio.fail_after(60):
                code = await process.wait()
        finally:
            process.kill()
    assert output["status"] == "completed"
    assert not cleaned_up_before_output
    assert code == 0 and marker.read_text() == "done"
