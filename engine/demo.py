"""``voice-engine demo``: the server and an emulated Twilio call in one process, no account.

The emulated caller rings the server (signed webhook, TwiML, signed stream token), says a
sentence synthesized by eSpeak NG, and listens. The demo prints what was said, what came back,
and the turn latency: end of caller speech → first reply audio sent, and → first reply heard.
"""

from __future__ import annotations

import secrets

import trio

from engine.loader import load_stage_factory
from engine.media.codec import FRAME_BYTES
from engine.server import ServerConfig, VoiceServer
from engine.testing import open_inbound_call, speech, speech_bounds

__all__ = ["run_demo", "speech_end_ms"]


def speech_end_ms(ulaw: bytes) -> int:
    """Where speech ends in ``ulaw`` (ms)."""
    return speech_bounds(ulaw)[1]


async def run_demo(pipeline: str, sentence: str) -> int:
    """Run the demo call; print the result; return the process exit code."""
    token = secrets.token_urlsafe(24)
    server = VoiceServer(
        ServerConfig(stage_factory=load_stage_factory(pipeline), auth_token=token, port=0)
    )
    audio = await trio.to_thread.run_sync(speech, sentence)
    lead_in_ms = 400
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        print(f"server: {url} (pipeline {pipeline}); emulated Twilio is calling…", flush=True)
        async with open_inbound_call(url, token) as call:
            await call.pause(lead_in_ms / 1000)
            said_from = call.record.frames_sent * 20
            await call.say(audio)
            said_until = said_from + speech_end_ms(audio)
            with trio.move_on_after(len(audio) / 8000 + 4):
                while True:
                    await trio.sleep(0.1)
                    first = call.record.first_heard_at(said_until)
                    if first is not None and call.record.heard[-FRAME_BYTES * 25 :] == bytes(
                        [0xFF]
                    ) * (FRAME_BYTES * 25):
                        break
        server.shutdown()
    record = call.record
    sent_at = next(
        (
            (t - record.t0) * 1000
            for t, _ in record.received
            if (t - record.t0) * 1000 >= said_until
        ),
        None,
    )
    heard_at = record.first_heard_at(said_until)
    hangover = server.config.session.turn.hangover_ms
    print(f'caller said:   "{sentence}" ({speech_end_ms(audio) / 1000:.2f} s of speech)')
    print(f"caller heard:  {record.heard_ms() / 1000:.2f} s of reply audio")
    if sent_at is None or heard_at is None:
        print("no reply reached the caller")
        return 1
    print(f"turn latency:  end of speech → first reply frame sent {sent_at - said_until:.0f} ms,")
    print(f"               → first reply audio heard {heard_at - said_until:.0f} ms")
    print(f"               (end-of-turn hangover configured: {hangover} ms)")
    return 0
