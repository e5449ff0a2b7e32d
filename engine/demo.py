"""``voice-engine demo``: the server and an emulated Twilio call in one process, no account.

The emulated caller rings the server (signed webhook, TwiML, signed stream token), says a
sentence synthesized by eSpeak NG, and listens. The demo prints what the engine heard and
answered (from the pipeline's log), how much reply audio reached the caller, and the turn
latency: end of caller speech → first reply audio sent, and → first reply audio heard.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Literal

import trio

from engine.loader import load_stage_factory
from engine.media.call import SessionConfig
from engine.server import ServerConfig, VoiceServer
from engine.testing import open_inbound_call, speech, speech_bounds

__all__ = ["run_demo", "speech_end_ms"]

_SAID = re.compile(r"call \w+: (heard|reply) (.*)")


def speech_end_ms(ulaw: bytes) -> int:
    """Where speech ends in ``ulaw`` (ms)."""
    return speech_bounds(ulaw)[1]


class _Transcript(logging.Handler):
    """Collects the ``heard "…"`` / ``reply "…"`` lines pipelines log for each turn."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _SAID.match(record.getMessage())
        if match:
            self.lines.append((match.group(1), match.group(2)))


async def run_demo(
    pipeline: str, sentence: str, turn: Literal["vad", "smart-turn"] | None = None
) -> int:
    """Run the demo call; print the result; return the process exit code. ``turn``: how the
    caller's turn ends (``SessionConfig.turn_taking``; default the server's)."""
    token = secrets.token_urlsafe(24)
    session = SessionConfig() if turn is None else SessionConfig(turn_taking=turn)
    server = VoiceServer(
        ServerConfig(
            stage_factory=load_stage_factory(pipeline), auth_token=token, port=0, session=session
        )
    )
    transcript = _Transcript()
    # Pipelines log what was said at DEBUG only (call content); the demo shows it.
    pipelines_log = logging.getLogger("pipelines")
    pipelines_log.addHandler(transcript)
    pipelines_log.setLevel(logging.DEBUG)
    audio = await trio.to_thread.run_sync(speech, sentence)
    said_until = 0
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        print(f"server: {url} (pipeline {pipeline}); emulated Twilio is calling…", flush=True)
        async with open_inbound_call(url, token) as call:
            record = call.record
            await call.pause(0.4)
            said_from = record.frames_sent * 20
            await call.say(audio)
            said_until = said_from + speech_end_ms(audio)
            # Listen until a reply has played and half a second of quiet followed it.
            with trio.move_on_after(len(audio) / 8000 + 15):
                while not (any(record.played[said_until // 20 :]) and not any(record.played[-25:])):
                    await trio.sleep(0.1)
        server.shutdown()
    record = call.record
    print(f'caller said:   "{sentence}" ({speech_end_ms(audio) / 1000:.2f} s of speech)')
    for kind, text in transcript.lines:
        print(f"engine {kind}:{' ' * (7 - len(kind))}{text}")
    played = sum(record.played[said_until // 20 :]) * 20
    print(f"caller heard:  {played / 1000:.2f} s of reply audio")
    sent_at = next(
        (
            (t - record.t0) * 1000
            for t, _ in record.received
            if (t - record.t0) * 1000 >= said_until
        ),
        None,
    )
    heard_tick = next(
        (i for i in range(said_until // 20, len(record.played)) if record.played[i]), None
    )
    if sent_at is None or heard_tick is None:
        print("no reply reached the caller")
        return 1
    print(f"turn latency:  end of speech → first reply audio sent {sent_at - said_until:.0f} ms,")
    print(f"               → first reply audio heard {heard_tick * 20 - said_until:.0f} ms")
    print(f"               ({_turn_rule(server.config.session)})")
    return 0


def _turn_rule(session: SessionConfig) -> str:
    """How the demo's server ended the caller's turn, in words."""
    if session.turn_taking == "vad":
        return f"end of turn: {session.turn.hangover_ms} ms of silence"
    first = session.end_of_turn.schedule[0].silence_ms if session.end_of_turn.schedule else 0
    return (
        f"end of turn: Smart Turn asked from {first} ms of silence, the turn ends by "
        f"{session.end_of_turn.max_silence_ms} ms at the latest"
    )
