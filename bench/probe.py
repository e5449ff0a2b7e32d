"""``bench.probe:create`` — a stage that makes the engine's turn decisions visible to the caller.

For the turn-taking benchmark (:mod:`bench.turn_taking`): on every ``SpeechStarted`` it plays one
20 ms marker frame of :data:`START_BYTE`, on every end of turn (``Utterance``) one of
:data:`END_BYTE`, so the emulated caller times each decision by the marker's arrival. DTMF ``1``
makes the bot talk — a prompt played in a loop, started again after every barge-in — until DTMF
``0``, so a ``clear`` shows each barge-in while it talks.
"""

from __future__ import annotations

from functools import cache

from engine.media.codec import FRAME_BYTES
from engine.media.frames import Dtmf, Interrupted, PlaybackDone, SpeechStarted, Utterance
from engine.media.stage import CallContext, Stage
from engine.tts import speak_ulaw

__all__ = ["END_BYTE", "START_BYTE", "Probe", "create"]

START_BYTE = 0x10
END_BYTE = 0x20
START_MARKER = bytes([START_BYTE]) * FRAME_BYTES
END_MARKER = bytes([END_BYTE]) * FRAME_BYTES
PROMPT_TEXT = (
    "Thank you for calling. Your call is important to us. Please listen carefully, as our "
    "menu options have changed. For bookings, press one. For opening hours, press two."
)


@cache
def prompt() -> bytes:
    """The bot's talk, as 8 kHz μ-law."""
    return speak_ulaw(PROMPT_TEXT)


class Probe(Stage):
    """Marks every speech start and end of turn; talks on request."""

    def __init__(self) -> None:
        self.talking = False

    async def on_speech_started(self, call: CallContext, event: SpeechStarted) -> None:
        """Play the start marker."""
        await call.play_ulaw(START_MARKER, label="start")

    async def on_utterance(self, call: CallContext, utterance: Utterance) -> None:
        """Play the end-of-turn marker."""
        await call.play_ulaw(END_MARKER, label="end")

    async def on_dtmf(self, call: CallContext, event: Dtmf) -> None:
        """``1``: start talking; ``0``: stop."""
        if event.digit == "1" and not self.talking:
            self.talking = True
            await call.play_ulaw(prompt(), label="prompt")
        elif event.digit == "0" and self.talking:
            self.talking = False
            await call.interrupt("stop talking")

    async def on_interrupted(self, call: CallContext, event: Interrupted) -> None:
        """Barged in on: talk on, from the start."""
        if self.talking:
            await call.play_ulaw(prompt(), label="prompt")

    async def on_playback_done(self, call: CallContext, event: PlaybackDone) -> None:
        """The prompt ended: say it again while talking."""
        if self.talking and event.label == "prompt":
            await call.play_ulaw(prompt(), label="prompt")


def create() -> Stage:
    """The probe stage."""
    prompt()  # synthesize before the call's audio flows
    return Probe()
