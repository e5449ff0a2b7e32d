"""``turn-echo``: each caller utterance is played back after the end of the turn.

It exercises the whole turn path — VAD, end-of-turn, playout with marks and barge-in — with no
model in the way, so turn latency is the engine's alone. Speaking over the playback cuts it.
"""

from __future__ import annotations

import logging

from engine.media.frames import Interrupted, PlaybackDone, Utterance
from engine.media.stage import CallContext, Stage

__all__ = ["TurnEcho", "create"]

log = logging.getLogger(__name__)


class TurnEcho(Stage):
    """Plays each utterance back; reports what was heard when interrupted."""

    def __init__(self) -> None:
        self.turns = 0

    async def on_utterance(self, call: CallContext, utterance: Utterance) -> None:
        """Play the utterance back under the label ``turn-N``."""
        self.turns += 1
        await call.play(utterance.pcm, label=f"turn-{self.turns}")

    async def on_interrupted(self, call: CallContext, event: Interrupted) -> None:
        """Log how much of the reply the caller heard before barging in."""
        log.info(
            "call %s: %s interrupted after %d ms heard (%d ms dropped)",
            call.call_sid,
            event.label,
            event.heard_ms,
            event.dropped_ms,
        )

    async def on_playback_done(self, call: CallContext, event: PlaybackDone) -> None:
        """Log a reply that played to its end."""
        log.info("call %s: %s played (%d ms)", call.call_sid, event.label, event.heard_ms)


def create() -> Stage:
    """The ``turn-echo`` pipeline's stage."""
    return TurnEcho()
