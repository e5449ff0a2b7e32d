"""Admission control end to end: a call ceiling, refusal TwiML, makeCall refused, metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from conftest import sentences, spoken
from engine.admission import AdmissionConfig
from engine.control.rest import Credentials, TwilioClient
from engine.control.signature import compute_signature
from engine.errors import Overloaded
from engine.server import ServerConfig, VoiceServer
from engine.testing import CallRefused, InboundCall, StreamRecord, open_answered_stream, ring
from pipelines.echo import Echo

TOKEN = "overload-test-token"
CEILING = 5
EXCESS = 20


@asynccontextmanager
async def running_server(max_calls: int) -> AsyncIterator[tuple[VoiceServer, str]]:
    config = ServerConfig(
        stage_factory=Echo,
        auth_token=TOKEN,
        port=0,
        media_port=0,
        admission=AdmissionConfig(max_calls=max_calls),
    )
    server = VoiceServer(config)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        yield server, url
        server.shutdown()


async def scrape(url: str) -> dict[str, float]:
    """``/metrics`` as {sample name with labels: value}."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def assert_echoed_everything(record: StreamRecord) -> None:
    echoed = b"".join(payload for _, payload in record.received)
    assert echoed, "nothing came back"
    assert echoed == record.mic, "the echo lost, reordered or changed a frame"


async def test_beyond_the_ceiling_callers_are_refused_and_the_admitted_stream_cleanly() -> None:
    speech = spoken(sentences()[0])[: 8000 * 2]
    async with running_server(CEILING) as (server, url):
        before = await scrape(url)
        answered: list[InboundCall] = []
        refusals: list[str] = []

        async with httpx.AsyncClient() as http:

            async def call_in(i: int) -> None:
                try:
                    answered.append(
                        await ring(url, TOKEN, client=http, from_number=f"+1555000{i:04d}")
                    )
                except CallRefused as exc:
                    refusals.append(exc.twiml)

            async with trio.open_nursery() as nursery:
                for i in range(CEILING + EXCESS):
                    nursery.start_soon(call_in, i)

        assert len(answered) == CEILING
        assert len(refusals) == EXCESS
        assert all('<Reject reason="busy" />' in twiml for twiml in refusals)

        # While the admitted calls hold every slot, makeCall refuses before any request.
        dead = TwilioClient(Credentials("AC" + "0" * 32, "x"), base_url="http://127.0.0.1:9")
        with pytest.raises(Overloaded) as refused:
            await server.make_call(dead, to="+14155552671", from_="+15005550006", pipeline="echo")
        assert refused.value.reason == "call-ceiling"

        records: list[StreamRecord] = []

        async def stream(call: InboundCall) -> None:
            async with open_answered_stream(call, TOKEN) as live:
                await live.say(speech)
                with trio.fail_after(5):
                    while len(b"".join(p for _, p in live.record.received)) < len(live.record.mic):
                        await trio.sleep(0.02)
                records.append(live.record)

        async with trio.open_nursery() as nursery:
            for call in answered:
                nursery.start_soon(stream, call)

        for record in records:
            assert record.errors == []
            assert_echoed_everything(record)
        after = await scrape(url)

    assert len(records) == CEILING
    assert delta(after, before, "voice_engine_calls_admitted_total{}") == CEILING
    assert delta(after, before, "voice_engine_calls_refused_total{reason=call-ceiling}") == (
        EXCESS + 1  # the makeCall
    )
    assert delta(after, before, "voice_engine_frames_in_total{}") >= CEILING * len(speech) // 160
    assert delta(after, before, "voice_engine_calls_ended_total{reason=stop}") == CEILING


async def test_an_answered_call_beyond_the_ceiling_hears_the_busy_message() -> None:
    async with running_server(0) as (_server, url), httpx.AsyncClient() as http:
        params = {
            "CallSid": "CA" + "1" * 32,
            "AccountSid": "AC" + "1" * 32,
            "From": "+15005550006",
            "To": "+14155552671",
            "Direction": "outbound-api",
            "CallStatus": "in-progress",
        }
        target = f"{url}/twilio/voice?pipeline=echo"
        response = await http.post(
            target,
            data=params,
            headers={"X-Twilio-Signature": compute_signature(target, params, TOKEN)},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert "<Say>Sorry, all our lines are busy" in response.text
    assert response.text.endswith("<Hangup /></Response>")
    assert "<Stream" not in response.text


async def test_a_lagging_event_loop_refuses_new_calls_until_it_recovers() -> None:
    config = ServerConfig(
        stage_factory=Echo,
        auth_token=TOKEN,
        port=0,
        admission=AdmissionConfig(max_loop_lag=0.05),
    )
    server = VoiceServer(config)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        url = await nursery.start(server.serve)
        assert (await ring(url, TOKEN, client=http)).connect.url  # a healthy loop admits
        time.sleep(0.3)  # noqa: ASYNC251 — the point: block this (the server's) event loop
        await trio.sleep(0.15)  # the monitor wakes, late, and notes the lag
        with pytest.raises(CallRefused):
            await ring(url, TOKEN, client=http)
        with trio.fail_after(5):  # the lag estimate decays once the loop runs on time
            while server.switchboard.admission.refusal(trio.current_time()) is not None:
                await trio.sleep(0.05)
        assert (await ring(url, TOKEN, client=http)).connect.url
        server.shutdown()
    refused = REGISTRY.get_sample_value("voice_engine_calls_refused_total", {"reason": "loop-lag"})
    assert refused is not None and refused >= 1
