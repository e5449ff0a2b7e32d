"""Graceful shutdown of a real ``voice-engine serve`` process: SIGTERM drains, then winds down."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from conftest import start_server
from engine.testing import CallRefused, StreamRecord, open_inbound_call, ring

CALLS = 10
DRAIN = 1.5
SILENCE = 0xFF


def voiced_ms(payloads: list[bytes]) -> int:
    """Milliseconds of received audio that is not μ-law silence (the notice)."""
    return sum(len(p.strip(bytes([SILENCE, 0x7F]))) for p in payloads) // 8


async def test_sigterm_drains_live_calls_then_ends_them_with_a_spoken_notice(
    tmp_path: Path,
) -> None:
    server = start_server(
        tmp_path, "turn-echo", args=["--drain-timeout", str(DRAIN), "--media-port", "0"]
    )
    records: list[StreamRecord] = []
    closed_after: list[float] = []
    try:
        signalled = trio.Event()
        sigterm_at = 0.0

        async def call() -> None:
            async with open_inbound_call(server.url, server.auth_token) as live:
                await signalled.wait()
                with trio.fail_after(DRAIN + 10):
                    await live.closed.wait()
                closed_after.append(trio.current_time() - sigterm_at)
                records.append(live.record)

        async with trio.open_nursery() as nursery:
            for _ in range(CALLS):
                nursery.start_soon(call)
            async with httpx.AsyncClient() as http:
                with trio.fail_after(10):
                    while (await http.get(f"{server.url}/healthz")).json()["calls"] < CALLS:
                        await trio.sleep(0.05)
            await trio.sleep(0.5)  # the callers are streaming (silence: no reply is playing)
            server.process.terminate()
            sigterm_at = trio.current_time()
            signalled.set()
            await trio.sleep(0.3)
            async with httpx.AsyncClient() as http:
                health = await http.get(f"{server.url}/healthz")
                assert health.status_code == 503
                assert health.json()["status"] == "draining"
                with pytest.raises(CallRefused) as refused:
                    await ring(server.url, server.auth_token, client=http)
                assert '<Reject reason="busy" />' in refused.value.twiml
        exit_code = server.process.wait(timeout=15)
    except BaseException:
        if server.process.poll() is None:
            server.process.kill()
        raise
    log = server.log()
    assert exit_code == 0, log
    assert len(records) == CALLS
    for record, after in zip(records, closed_after, strict=True):
        assert record.errors == [], record.errors  # every message whole and well-formed
        assert record.closed_by_server and record.close_code == 1000
        # Calls ran on through the drain, then heard the notice before the close.
        assert DRAIN <= after <= DRAIN + 8
        drained_at = sigterm_at + DRAIN - 0.1  # arrival times are trio clock seconds
        before = [payload for at, payload in record.received if at < drained_at]
        notice = [payload for at, payload in record.received if at >= drained_at]
        assert voiced_ms(before) == 0  # silence in: nothing to say until the notice
        assert voiced_ms(notice) >= 1000, "the shutdown notice was not played"
    assert log.count("ended: shutdown") == CALLS, log


def test_sigterm_with_no_call_in_flight_exits_at_once(tmp_path: Path) -> None:
    # With no call in flight, SIGTERM ends the server at once (no drain wait).
    server = start_server(tmp_path, "echo", args=["--drain-timeout", "30"])
    server.process.terminate()
    try:
        assert server.process.wait(timeout=5) == 0
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise
