"""Calls on the emulated Twilio REST API: lifecycles, streams, updates and status callbacks.

Calls dial a real in-process ``VoiceServer`` running the echo pipeline; callbacks land on a
webhook receiver that checks every signature (see ``twilio_api_support``).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from conftest import sentences, spoken
from engine.testing.twilio_api import CalleeBehaviour, TwilioEmulator
from twilio_api_support import (
    FROM,
    RFC_2822,
    TO,
    assert_error,
    create_call,
    create_message,
    emulator,
    path,
    post_form,
    receiver,
    until,
    voice_server,
)

# -- calls --------------------------------------------------------------------------------------

ALL_EVENTS = [("StatusCallbackEvent", e) for e in ("initiated", "ringing", "answered", "completed")]


async def test_a_call_reaches_the_voice_server_streams_and_reports_its_progress() -> None:
    audio = spoken(sentences()[0])[:8000]
    async with (
        voice_server() as server,
        receiver() as (hook, received),
        emulator() as (emu, client),
    ):
        emu.callee(TO, CalleeBehaviour(say=audio, say_after=0.2, hang_up_after=2.0))
        form = [
            ("To", TO),
            ("From", FROM),
            ("Url", f"{server}/twilio/voice"),
            ("StatusCallback", f"{hook}/twilio/status"),
            *ALL_EVENTS,
        ]
        response = await post_form(client, path(emu, "Calls"), form)
        assert response.status_code == 201
        call = emu.calls[response.json()["sid"]]
        await call.ended.wait()
        await until(lambda: len(received) == 4)

        assert call.end_reason == "callee-hung-up"
        assert call.progress == ["initiated", "ringing", "in-progress", "completed"]
        [webhook] = call.twiml_requests
        assert webhook.ok and webhook.params["CallStatus"] == "in-progress"
        assert (
            webhook.params["Direction"] == "outbound-api" and webhook.params["CallSid"] == call.sid
        )
        assert "<Connect><Stream" in call.twiml[0]
        record = call.record
        assert record is not None and not record.closed_by_server
        echoed = b"".join(payload for _, payload in record.received)
        assert len(echoed) > 4000 and echoed[:4000] == record.mic[:4000]

        assert all(r.signed and r.path == "/twilio/status" for r in received)
        assert [r.params["SequenceNumber"] for r in received] == ["0", "1", "2", "3"]
        statuses = [r.params["CallStatus"] for r in received]
        assert statuses == ["initiated", "ringing", "in-progress", "completed"]
        final = received[-1].params
        assert final["CallbackSource"] == "call-progress-events"
        assert final["CallDuration"] == "2" and final["Duration"] == "1"
        assert final["SipResponseCode"] == "200" and RFC_2822.match(final["Timestamp"])
        assert "CallDuration" not in received[0].params

        fetched = (await client.get(path(emu, "Calls", call.sid))).json()
        assert fetched["status"] == "completed" and fetched["duration"] == "2"


@pytest.mark.parametrize(
    ("outcome", "status", "sip"),
    [("busy", "busy", "486"), ("no-answer", "no-answer", "487"), ("fail", "failed", "404")],
)
async def test_unanswered_calls_end_with_their_status(outcome: Any, status: str, sip: str) -> None:
    async with receiver() as (hook, received), emulator(time_scale=0.01) as (emu, client):
        emu.callee(TO, outcome)
        started = trio.current_time()
        response = await create_call(
            emu, client, Url=f"{hook}/voice", StatusCallback=f"{hook}/status", Timeout="20"
        )
        call = emu.calls[response.json()["sid"]]
        await call.ended.wait()
        if outcome == "no-answer":  # rang for Timeout=20 emulated seconds = 0.2 s
            assert trio.current_time() - started >= 0.2
        await until(lambda: len(received) == 1)
        [final] = received  # only `completed` by default
        assert final.signed and final.params["CallStatus"] == status
        assert final.params["SipResponseCode"] == sip and final.params["CallDuration"] == "0"
        assert final.params["SequenceNumber"] == "0"
        assert call.twiml_requests == []  # never answered, so no TwiML was fetched
        fetched = (await client.get(path(emu, "Calls", call.sid))).json()
        assert fetched["status"] == status and fetched["price"] is None


async def test_time_limit_ends_the_call() -> None:
    async with (
        voice_server() as server,
        receiver() as (hook, received),
        emulator(time_scale=0.05) as (emu, client),
    ):
        response = await create_call(
            emu, client, Url=f"{server}/twilio/voice", StatusCallback=hook, TimeLimit="10"
        )
        call = emu.calls[response.json()["sid"]]
        await call.ended.wait()
        assert call.end_reason == "time-limit" and call.duration == 10
        assert call.record is not None and call.record.frames_sent > 10
        await until(lambda: len(received) == 1)
        assert received[0].params["CallDuration"] == "10"


async def test_updating_status_hangs_up_or_cancels() -> None:
    async with (
        voice_server() as server,
        receiver() as (hook, received),
        emulator() as (emu, client),
    ):
        live = await create_call(emu, client, Url=f"{server}/twilio/voice", StatusCallback=hook)
        call = emu.calls[live.json()["sid"]]
        await until(lambda: call.stream is not None)
        await trio.sleep(0.3)
        hung_up = await client.post(path(emu, "Calls", call.sid), data={"Status": "completed"})
        assert hung_up.status_code == 200 and hung_up.json()["status"] == "completed"
        assert call.end_reason == "api-completed" and call.updates == [[("Status", "completed")]]
        assert call.stream is None and call.record is not None and call.record.frames_sent > 5

        emu.callee("+15558675399", CalleeBehaviour(ring_seconds=30))
        ringing = await create_call(
            emu, client, To="+15558675399", Twiml="<Response/>", StatusCallback=hook
        )
        other = emu.calls[ringing.json()["sid"]]
        await until(lambda: other.status == "ringing")
        canceled = await client.post(path(emu, "Calls", other.sid), data={"Status": "canceled"})
        assert canceled.json()["status"] == "canceled" and other.end_reason == "api-canceled"
        assert_error(
            await client.post(path(emu, "Calls", other.sid), data={"Status": "hung-up"}), 400, 20001
        )
        await until(lambda: len(received) == 2)
        by_call = {r.params["CallSid"]: r.params for r in received}
        assert by_call[call.sid]["CallStatus"] == "completed"
        assert by_call[other.sid]["CallStatus"] == "canceled"
        assert by_call[other.sid]["SipResponseCode"] == "487"


async def test_updating_twiml_redirects_a_live_call() -> None:
    async with voice_server() as server, emulator() as (emu, client):
        response = await create_call(emu, client, Url=f"{server}/twilio/voice")
        call = emu.calls[response.json()["sid"]]
        await until(lambda: call.stream is not None)
        redirect = {"Twiml": "<Response><Say>Goodbye</Say></Response>"}
        updated = await client.post(path(emu, "Calls", call.sid), data=redirect)
        assert updated.status_code == 200
        await call.ended.wait()
        assert call.twiml[1] == redirect["Twiml"] and call.end_reason == "twiml-ended"
        assert call.status == "completed" and len(call.records) == 1
        too_late = await client.post(path(emu, "Calls", call.sid), data=redirect)
        assert_error(too_late, 400, 21220)


async def test_the_server_closing_the_stream_completes_the_call() -> None:
    async with voice_server() as server, emulator() as (emu, client):
        # No stream token in <Parameter>: the server refuses the stream and closes it.
        stream_url = server.replace("http://", "ws://") + "/twilio/media"
        twiml = f'<Response><Connect><Stream url="{stream_url}"/></Connect></Response>'
        response = await create_call(emu, client, Twiml=twiml)
        call = emu.calls[response.json()["sid"]]
        with trio.fail_after(5):
            await call.ended.wait()
        assert call.end_reason == "stream-closed" and call.status == "completed"
        assert call.record is not None and call.stream is None


# -- callbacks ----------------------------------------------------------------------------------


async def run_quick_call(emu: TwilioEmulator, client: httpx.AsyncClient, hook: str) -> str:
    form = [("To", TO), ("From", FROM), ("Twiml", "<Response/>"), ("StatusCallback", hook)]
    form += ALL_EVENTS
    response = await post_form(client, path(emu, "Calls"), form)
    call = emu.calls[response.json()["sid"]]
    await call.ended.wait()
    return call.sid


async def test_callbacks_can_be_disabled_duplicated_or_shuffled() -> None:
    async with receiver() as (hook, received), emulator() as (emu, client):
        emu.status_callbacks_enabled = False
        await run_quick_call(emu, client, f"{hook}/status")
        await trio.sleep(0.1)
        assert received == []

        emu.status_callbacks_enabled = True
        emu.duplicate_callbacks = True
        await run_quick_call(emu, client, f"{hook}/status")
        await until(lambda: len(received) == 8)
        assert [r.params["SequenceNumber"] for r in received] == [
            "0",
            "0",
            "1",
            "1",
            "2",
            "2",
            "3",
            "3",
        ]

        received.clear()
        emu.duplicate_callbacks = False
        emu.callback_order = "shuffled"
        out_of_order = 0
        for _ in range(10):  # each call's four callbacks keep their order with p < 0.3
            sid = await run_quick_call(emu, client, f"{hook}/status")

            def numbers_of(sid: str = sid) -> list[str]:
                return [r.params["SequenceNumber"] for r in received if r.params["CallSid"] == sid]

            await until(lambda: len(numbers_of()) == 4)
            numbers = numbers_of()
            assert sorted(numbers) == ["0", "1", "2", "3"]
            out_of_order += numbers != ["0", "1", "2", "3"]
            if out_of_order:
                break
        assert out_of_order and all(r.signed for r in received)


async def test_callback_failures_are_recorded_and_harmless() -> None:
    async with receiver(status=500) as (hook, _received), emulator() as (emu, client):
        await run_quick_call(emu, client, f"{hook}/status")
        await until(lambda: len(emu.callbacks) == 4)
        assert [c.status for c in emu.callbacks] == [500] * 4
        await run_quick_call(emu, client, "http://127.0.0.1:9/nobody-listens")
        await until(lambda: len(emu.callbacks) == 8)
        assert all(c.status is None and c.error for c in emu.callbacks[4:])
        assert (await create_message(emu, client)).status_code == 201
