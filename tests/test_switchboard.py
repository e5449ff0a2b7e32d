"""The switchboard of an in-process server: an exact call ceiling while calls set up, the
measured ceiling by default, and a closing notice heard whole."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from conftest import sentences, spoken
from engine.admission import AdmissionConfig
from engine.control.signature import compute_signature
from engine.server import ServerConfig, VoiceServer
from engine.testing import CallRefused, open_answered_stream, ring, speech
from pipelines.echo import Echo
from pipelines.turn_echo import create as turn_echo

TOKEN = "switchboard-token"


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[tuple[VoiceServer, str]]:
    options.setdefault("stage_factory", Echo)
    server = VoiceServer(ServerConfig(auth_token=TOKEN, port=0, **options))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        yield server, url
        server.shutdown()


async def test_the_ceiling_is_exact_while_streams_are_opening() -> None:
    # Nine calls admitted, their sockets open but not yet started (between handshake and
    # start): the tenth call still fits, the eleventh does not.
    async with (
        running(admission=AdmissionConfig(max_calls=10)) as (server, url),
        httpx.AsyncClient() as http,
    ):
        calls = [await ring(url, TOKEN, client=http) for _ in range(9)]
        async with trio.open_nursery() as nursery:
            opened = 0

            async def hold_open(media_url: str) -> None:
                nonlocal opened
                headers = [("X-Twilio-Signature", compute_signature(media_url, {}, TOKEN))]
                async with trio_websocket.open_websocket_url(media_url, extra_headers=headers):
                    opened += 1
                    await trio.sleep_forever()

            for call in calls:
                nursery.start_soon(hold_open, call.connect.url)
            with trio.fail_after(5):
                while opened < 9:
                    await trio.sleep(0.01)
            assert len(server.sessions) == 9
            tenth = await ring(url, TOKEN, client=http)
            with pytest.raises(CallRefused):
                await ring(url, TOKEN, client=http)
            nursery.cancel_scope.cancel()
        stats = server.switchboard.admission.statistics()
        assert (stats.admitted, stats.refused) == (10, 1)
        # The tenth streams for real.
        async with open_answered_stream(tenth, TOKEN) as stream:
            await stream.say(spoken(sentences()[0])[:4000])
        assert stream.record.received


async def test_by_default_the_ceiling_is_measured_on_this_machine() -> None:
    async with running() as (server, url), httpx.AsyncClient() as http:
        await ring(url, TOKEN, client=http)  # answered once the ceiling is known
        capacity = server.switchboard.capacity
        assert capacity is not None
        assert 1e-6 < capacity.frame_cost < 0.01  # seconds of CPU per frame
        assert server.switchboard.admission.ceiling == capacity.ceiling
        metrics = (await http.get(f"{url}/metrics")).text
        assert f"voice_engine_call_ceiling {float(capacity.ceiling)}" in metrics


async def test_the_closing_notice_is_heard_whole_while_the_caller_speaks() -> None:
    notice = "We are sorry, this call has to end now. Goodbye."
    notice_ms = len(speech(notice)) // 8
    talk = b"".join(spoken(s) for s in sentences()[:3])  # longer than the drain and notice
    drain = 0.5
    async with (
        running(stage_factory=turn_echo, drain_timeout=drain, shutdown_notice=notice) as (
            server,
            url,
        ),
        httpx.AsyncClient() as http,
    ):
        call = await ring(url, TOKEN, client=http)
        async with open_answered_stream(call, TOKEN) as stream, trio.open_nursery() as nursery:
            nursery.start_soon(stream.say, talk)
            await stream.pause(1.0)  # the caller is speaking now, and goes on
            wound_down_at = trio.current_time() + drain
            server.shutdown()
            with trio.fail_after(drain + notice_ms / 1000 + 8):
                await stream.closed.wait()
            nursery.cancel_scope.cancel()
    record = stream.record
    assert record.close_code == 1000
    # The stage's own audio may be cut when the call winds down; nothing cuts the notice.
    last_clear = max((at for at, _ in record.clears), default=0.0)
    assert last_clear < wound_down_at + 0.3
    heard = sum(len(p) for at, p in record.received if at >= max(last_clear, wound_down_at))
    assert heard // 8 >= notice_ms - 60, (heard // 8, notice_ms)
