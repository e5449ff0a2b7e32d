"""Every Python example of the README's "Use it from Python" section runs, as a script, against
the Twilio emulator (the connection and API base from the environment, as the README says)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import trio

from conftest import ROOT, SPEC_PATH, sentences, spoken, start_server, stop_server
from engine.testing import CalleeBehaviour, open_inbound_call, open_twilio_emulator

SECTION = "## Use it from Python"
CALLEE = "+14155552671"


def python_examples() -> list[str]:
    """The ```python blocks between the section's heading and the next ``## `` heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)


EXAMPLES = python_examples()
# The least each example asks of the account in the environment: messages, calls and
# requests answered without error (the last two examples bring their own emulator).
LEAST_REQUESTS = [3, 3, 2, 0, 0]


def test_the_section_has_an_example_per_topic() -> None:
    assert len(EXAMPLES) == len(LEAST_REQUESTS)
    topics = ["send_sms(", "execute(", ".request(", "class Parrot", "open_twilio_emulator("]
    for example, topic in zip(EXAMPLES, topics, strict=True):
        assert topic in example


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
async def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"example_{index}.py"
    script.write_text(EXAMPLES[index], encoding="utf-8")
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        emulator.callee(CALLEE, CalleeBehaviour(hang_up_after=1.0))
        emulator.open_whatsapp_session("whatsapp:" + CALLEE)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TWILIO_ACCOUNT_SID": emulator.account_sid,
            "TWILIO_AUTH_TOKEN": emulator.auth_token,
            "TWILIO_API_BASE_URL": emulator.base_url,
            "PORT": "0",
        }
        env.pop("PUBLIC_URL", None)
        env.pop("TWILIO_API_KEY", None)
        with trio.fail_after(120):  # a hang guard
            result = await trio.run_process(
                [sys.executable, str(script)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=env,
                cwd=tmp_path,
            )
        requests = list(emulator.requests)
    assert result.returncode == 0, result.stderr.decode()
    assert len(requests) >= LEAST_REQUESTS[index]
    assert all(request.status < 400 for request in requests), requests


def stage_example() -> str:
    """The module of the README's "Writing a stage" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Writing a stage")
    (block,) = re.findall(r"^```python\n(# mystage\.py\n.*?)^```$", text[start:], re.S | re.M)[:1]
    return block


async def test_the_writing_a_stage_example_serves_a_call(tmp_path: Path) -> None:
    (tmp_path / "mystage.py").write_text(stage_example(), encoding="utf-8")
    server = start_server(tmp_path, "mystage:create", env={"PYTHONPATH": f"{ROOT}:{tmp_path}"})
    try:
        async with open_inbound_call(server.url, server.auth_token) as call:
            await call.say(spoken(sentences()[0]))
            with trio.fail_after(15):
                while call.record.heard_ms() < 1000:  # the Parrot says it back
                    await trio.sleep(0.1)
    finally:
        assert stop_server(server) == 0, server.log()
