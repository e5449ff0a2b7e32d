"""``echo``: every inbound 20 ms frame goes straight back — the round-trip probe.

No turn detection, no barge-in, no pacing, no transcoding: the caller's μ-law bytes are played
back from the call's reader task as they arrive (``inline_audio``; playout's fast lane writes
them at once), so the time from a frame's send to its echo is the engine's own turnaround.
"""

from __future__ import annotations

from engine.media.frames import Audio
from engine.media.stage import CallContext, Stage

__all__ = ["Echo", "create"]


class Echo(Stage):
    """Plays each inbound frame back at once."""

    receives_audio = True
    turn_detection = False
    barge_in = False
    paced = False
    inline_audio = True

    async def on_audio(self, call: CallContext, audio: Audio) -> None:
        """Send the frame back unchanged."""
        await call.play_ulaw(audio.ulaw, label="echo")


def create() -> Stage:
    """The ``echo`` pipeline's stage."""
    return Echo()
