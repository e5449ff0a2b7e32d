"""End to end over real sockets against ``voice-engine serve`` in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio_websocket

from conftest import sentences, spoken
from engine.control.signature import compute_signature
from engine.media.codec import FRAME_BYTES
from engine.testing import EmulatorError, open_inbound_call, open_stream, ring
from engine.testing.stream import StreamRecord

SILENCE = b"\xff" * FRAME_BYTES


def canonical(ulaw: bytes) -> bytes:
    """μ-law with −0 (0x7F) written as +0 (0xFF): decode → encode may turn one into the other."""
    return ulaw.replace(b"\x7f", b"\xff")


def heard_after(record: StreamRecord, ms: int) -> bytes:
    return bytes(record.heard[ms // 20 * FRAME_BYTES :])


async def wait_for_silence(record: StreamRecord, after_ms: int, timeout: float) -> None:
    """Wait until the caller heard something after ``after_ms`` and then 500 ms of nothing."""
    with trio.move_on_after(timeout):
        while True:
            await trio.sleep(0.1)
            if record.first_heard_at(after_ms) is not None and all(
                b == 0 for b in record.played[-25:]
            ):
                return


async def test_turn_echo_plays_the_utterance_back_after_end_of_turn(serve) -> None:
    server = serve("turn-echo")
    audio = spoken(sentences()[0])
    async with open_inbound_call(server.url, server.auth_token) as call:
        await call.pause(0.3)
        spoke_at = call.record.frames_sent * 20
        await call.say(audio)
        ended_at = spoke_at + len(audio) // 8
        await wait_for_silence(call.record, ended_at, timeout=len(audio) / 8000 + 5)
    record = call.record
    assert record.errors == []
    heard = canonical(heard_after(record, spoke_at))
    # The speech itself (its middle 2 s) comes back byte for byte, after the caller finished.
    middle = canonical(audio[len(audio) // 4 : len(audio) // 4 + 16000])
    position = heard.find(middle)
    assert position >= 0, "the caller did not hear their own utterance back"
    heard_at = spoke_at + position // 8
    assert heard_at > ended_at - len(audio) // 8 + len(audio) // 32  # not before the turn ended
    first = record.first_heard_at(spoke_at)
    assert first is not None and first >= spoke_at + len(audio) // 8 - 300
    # All of the speech came back, including its first syllable.
    voiced = canonical(audio).strip(b"\xff")
    assert canonical(heard_after(record, spoke_at)).find(voiced[:4000]) >= 0


async def test_twenty_concurrent_calls_each_hear_only_their_own_audio(serve) -> None:
    server = serve("turn-echo")
    texts = sentences()[:20]
    audios = [spoken(text) for text in texts]
    records: list[StreamRecord] = [None] * len(audios)  # type: ignore[list-item]

    async def one_call(i: int) -> None:
        async with open_inbound_call(server.url, server.auth_token) as call:
            await call.pause(0.2)
            spoke_at = call.record.frames_sent * 20
            await call.say(audios[i])
            await wait_for_silence(call.record, spoke_at + len(audios[i]) // 8, timeout=8)
        records[i] = call.record

    async with trio.open_nursery() as nursery:
        for i in range(len(audios)):
            nursery.start_soon(one_call, i)

    for i, record in enumerate(records):
        assert record.errors == []
        heard = canonical(bytes(record.heard))
        for j, audio in enumerate(audios):
            needle = canonical(audio[len(audio) // 3 : len(audio) // 3 + 4000])
            if i == j:
                assert needle in heard, f"call {i} did not hear its own utterance"
            else:
                assert needle not in heard, f"call {i} heard call {j}'s audio"


async def test_barge_in_clears_within_two_frames_and_tells_the_stage(serve, tmp_path: Path) -> None:
    record_path = tmp_path / "events.jsonl"
    # Two sentences said as one turn (a long reply to interrupt): the VAD rule keeps them one
    # turn, where Smart Turn may end the turn between them.
    server = serve(
        "recording_stage:create", env={"RECORD_PATH": str(record_path)}, args=["--turn", "vad"]
    )
    first = spoken(sentences()[3] + " " + sentences()[4])
    second = spoken(sentences()[5])
    async with open_inbound_call(server.url, server.auth_token) as call:
        await call.pause(0.2)
        await call.say(first)
        # Wait until the reply is audible, then talk over it.
        with trio.fail_after(5):
            while sum(call.record.played) < 40:  # 800 ms of the reply heard
                await trio.sleep(0.02)
        await call.say(second)
        await call.pause(1.0)
    record = call.record
    assert len(record.clears) == 1, record.clears
    clear_time, last_sent_ts = record.clears[0]
    events = [json.loads(line) for line in record_path.read_text().splitlines()]
    starts = [e for e in events if e["type"] == "SpeechStarted"]
    interrupted = [e for e in events if e["type"] == "Interrupted"]
    assert len(starts) == 2 and len(interrupted) == 1, events
    detected_at = starts[1]["detected_at"]
    # clear arrived within 2 frames (40 ms of media time) of the frame that triggered detection.
    assert 0 <= last_sent_ts - detected_at <= 40, (last_sent_ts, detected_at)
    # The stage is told the heard length: what the emulated caller actually played.
    clear_tick = int((clear_time - record.t0) / 0.020)
    played_ms = 20 * sum(record.played[: clear_tick + 1])
    assert interrupted[0]["label"] == "turn-1"
    assert abs(interrupted[0]["heard_ms"] - played_ms) <= 60, (interrupted, played_ms)
    assert interrupted[0]["dropped"] > 0
    # After the clear nothing more of the first reply plays until the second turn's reply.
    after = record.played[clear_tick + 2 : clear_tick + 10]
    assert sum(after) == 0


async def test_bad_tokens_and_signatures_are_refused_while_healthy_calls_stream(serve) -> None:
    server = serve("echo")
    audio = spoken(sentences()[6])
    healthy: list[StreamRecord] = []
    outcomes: dict[str, object] = {}

    async def healthy_call() -> None:
        async with open_inbound_call(server.url, server.auth_token) as call:
            await call.say(audio)
            await call.pause(0.5)
        healthy.append(call.record)

    async def attacker(name: str, parameters: dict[str, str], sign: bool = True) -> None:
        answered = await ring(server.url, server.auth_token)
        try:
            async with open_stream(
                answered.connect.url,
                auth_token=server.auth_token if sign else "wrong-token",
                call_sid=answered.call_sid,
                account_sid=answered.account_sid,
                parameters=parameters(answered) if callable(parameters) else parameters,
            ) as stream:
                await stream.say(audio[:8000])
                await stream.pause(0.5)
            outcomes[name] = (stream.record.close_code, len(stream.record.received))
        except trio_websocket.ConnectionRejected as exc:
            outcomes[name] = ("rejected", exc.status_code)

    async def forged_webhook() -> None:
        with pytest.raises(EmulatorError, match="403"):
            await ring(server.url, "not-the-auth-token")
        outcomes["forged-webhook"] = "403"

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(healthy_call)
        await trio.sleep(0.5)
        nursery.start_soon(attacker, "missing-token", {})
        nursery.start_soon(attacker, "garbage-token", {"token": "v1.999.garbage"})
        nursery.start_soon(
            attacker,
            "other-call-token",
            lambda answered: {"token": answered.connect.parameters["token"][:-2] + "AA"},
        )
        nursery.start_soon(
            attacker, "bad-handshake", lambda answered: answered.connect.parameters, False
        )
        nursery.start_soon(forged_webhook)

    assert outcomes["missing-token"] == (1008, 0)
    assert outcomes["garbage-token"] == (1008, 0)
    assert outcomes["other-call-token"] == (1008, 0)
    assert outcomes["bad-handshake"] == ("rejected", 403)
    assert outcomes["forged-webhook"] == "403"
    assert len(healthy) == 5
    for record in healthy:
        assert record.errors == []
        # echo returns every frame, in order: none lost but the last few still in flight at stop
        echoed = b"".join(payload for _, payload in record.received)
        assert echoed == record.mic[: len(echoed)]
        assert len(record.mic) - len(echoed) <= 5 * FRAME_BYTES
    assert "Traceback" not in server.log()


async def test_webhook_signature_is_checked_against_the_public_url(serve) -> None:
    server = serve("echo")
    params = {"CallSid": "CA" + "0" * 32, "From": "+15017122661", "To": "+15558675310"}
    import httpx

    async with httpx.AsyncClient() as client:
        url = server.url + "/twilio/voice"
        good = compute_signature(url, params, server.auth_token)
        ok = await client.post(url, data=params, headers={"X-Twilio-Signature": good})
        missing = await client.post(url, data=params)
        tampered = await client.post(
            url, data={**params, "To": "+15550000000"}, headers={"X-Twilio-Signature": good}
        )
        health = await client.get(server.url + "/healthz")
    assert ok.status_code == 200 and "<Stream" in ok.text
    assert missing.status_code == 403
    assert tampered.status_code == 403
    assert health.json() == {"status": "ok", "calls": 0}
