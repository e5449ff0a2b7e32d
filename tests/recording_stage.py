"""A user-written stage, loaded by ``--pipeline recording_stage:create`` in the e2e tests.

It is turn-echo plus a log: every frame it gets is appended as a JSON line to ``$RECORD_PATH``,
so a test can see what the stage was told (speech onsets, heard lengths) from outside the server.
"""

from __future__ import annotations

import json
import os

from engine.media.frames import Frame, Interrupted, PlaybackDone, SpeechStarted, Utterance
from engine.media.stage import CallContext, Stage
from pipelines.turn_echo import TurnEcho


class RecordingTurnEcho(TurnEcho):
    """Turn echo that records what it is told."""

    def __init__(self) -> None:
        super().__init__()
        self.path = os.environ["RECORD_PATH"]

    def _write(self, call: CallContext, frame: Frame) -> None:
        entry: dict[str, object] = {"call": call.call_sid, "type": type(frame).__name__}
        match frame:
            case SpeechStarted():
                entry |= {"timestamp": frame.timestamp, "detected_at": frame.detected_at}
            case Utterance():
                entry |= {"start": frame.start, "end": frame.end, "ms": frame.duration_ms}
            case Interrupted():
                entry |= {
                    "label": frame.label,
                    "heard_ms": frame.heard_ms,
                    "dropped": frame.dropped_ms,
                }
            case PlaybackDone():
                entry |= {"label": frame.label, "heard_ms": frame.heard_ms}
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    async def run(self, call: CallContext) -> None:
        async for frame in call:
            self._write(call, frame)
            match frame:
                case Utterance():
                    await self.on_utterance(call, frame)
                case Interrupted():
                    await self.on_interrupted(call, frame)


def create() -> Stage:
    return RecordingTurnEcho()
