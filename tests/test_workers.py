"""``voice-engine serve --workers 2``: a call's webhook, media socket and status callbacks may
land on different worker processes, and the call — with makeCall's wait — still works."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from conftest import SPEC_PATH, sentences, spoken, start_server, stop_server
from engine.control.calls import CallStatusBoard, make_call
from engine.control.rest import Credentials, TwilioClient
from engine.testing import CalleeBehaviour, open_twilio_emulator

FROM = "+15005550006"
CALLS = 4
LINE = re.compile(r"\[(\d+)\] engine\.[a-z.]+: call (CA[0-9a-f]{32})")


def workers_by_call(log: str) -> dict[str, set[str]]:
    """For each CallSid, the worker pids that logged something about it."""
    seen: dict[str, set[str]] = {}
    for pid, call_sid in LINE.findall(log):
        seen.setdefault(call_sid, set()).add(pid)
    return seen


async def test_calls_spread_over_two_workers_complete_and_make_call_waits_them_out(
    tmp_path: Path,
) -> None:
    speech = spoken(sentences()[3])
    async with open_twilio_emulator(spec_path=SPEC_PATH) as emulator:
        server = start_server(
            tmp_path,
            "turn-echo",
            env={"TWILIO_AUTH_TOKEN": emulator.auth_token},
            args=["--workers", "2"],
            log_level="DEBUG",  # each request of a call logs its CallSid (one line at INFO)
        )
        try:
            credentials = Credentials(emulator.account_sid, emulator.auth_token)
            results: list[dict[str, object]] = []
            async with TwilioClient(credentials, base_url=emulator.base_url) as client:

                async def place(i: int) -> None:
                    callee = f"+1415555{2671 + i:04d}"
                    emulator.callee(
                        callee,
                        CalleeBehaviour(
                            say=speech, say_after=0.3, hang_up_after=2 * len(speech) / 8000 + 2.5
                        ),
                    )
                    # This process hears no status callback (they go to the workers): makeCall
                    # must learn the end from Twilio itself.
                    results.append(
                        await make_call(
                            client,
                            CallStatusBoard(),
                            to=callee,
                            from_=FROM,
                            public_url=server.url,
                            pipeline="turn-echo",
                            first_poll=0.5,
                            max_poll=1.0,
                        )
                    )

                async with trio.open_nursery() as nursery:
                    for i in range(CALLS):
                        nursery.start_soon(place, i)
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"{server.url}/metrics")).text
        finally:
            exit_code = stop_server(server)

    log = server.log()
    assert exit_code == 0, log
    assert len(results) == CALLS
    for result in results:
        assert result["status"] == "completed", result
        call = emulator.calls[str(result["callSid"])]
        assert call.record is not None
        # The pipeline ran live: the callee heard its own sentence back (turn-echo).
        middle = speech[len(speech) // 3 : len(speech) // 3 + 4000].replace(b"\x7f", b"\xff")
        assert middle in bytes(call.record.heard).replace(b"\x7f", b"\xff")
        assert call.callbacks, "status callbacks were sent to the workers"
    by_call = workers_by_call(log)
    assert len(set().union(*by_call.values())) == 2, "both workers took part"
    assert any(len(pids) == 2 for pids in by_call.values()), (
        "no call had its requests split over both workers"
    )
    # Any worker's /metrics counts the whole server's calls.
    totals = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert totals["voice_engine_calls_admitted_total"] == CALLS


async def test_a_worker_that_dies_is_replaced_and_the_port_keeps_answering(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path, "echo", args=["--workers", "2"])
    try:
        pids = re.findall(r"worker (\d+) serving", server.log())
        assert len(pids) == 2
        os.kill(int(pids[0]), signal.SIGKILL)
        with trio.fail_after(15):
            while len(re.findall(r"worker (\d+) serving", server.log())) < 3:
                await trio.sleep(0.1)
        replacement = re.findall(r"worker (\d+) serving", server.log())[-1]
        assert replacement not in pids
        async with httpx.AsyncClient() as http:
            for _ in range(10):  # spread over both workers: every one answers
                assert (await http.get(f"{server.url}/healthz")).status_code == 200
    finally:
        exit_code = stop_server(server)
    assert exit_code == 0, server.log()
    assert "exited with -9; restarting" in server.log()
