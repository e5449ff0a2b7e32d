"""The AI stage interface: what a user implements to put a voice agent on a call.

A stage sees the call through a :class:`CallContext`: it iterates over inbound frames
(:class:`~engine.media.frames.Utterance`, :class:`~engine.media.frames.SpeechStarted`,
:class:`~engine.media.frames.Interrupted`, …) and answers with :meth:`CallContext.play`.
The smallest useful stage overrides one handler::

    from engine import CallContext, Stage, Utterance

    class Parrot(Stage):
        async def on_utterance(self, call: CallContext, utterance: Utterance) -> None:
            await call.play(utterance.pcm)          # 8 kHz int16; other rates: rate=16000

    def create() -> Stage:                          # voice-engine serve --pipeline mymod:create
        return Parrot()

A stage that needs full control (streaming a reply while listening for barge-in) overrides
:meth:`Stage.run` and runs its own nursery inside it. One stage instance serves one call; when the
call ends, ``run`` is cancelled. An exception in a stage ends its own call, never the server.

**End of turn.** How a caller's turn ends is the server's choice (``serve --turn vad|smart-turn``,
``SessionConfig.turn_taking``): ``smart-turn`` (the default) asks Smart Turn v3 at each pause
whether the caller has finished (:mod:`engine.media.turn`), falling back to the VAD rule when the
model is slow, failing or saturated; ``vad`` ends it after ``--hangover-ms`` of silence. Either
way the stage receives the same frames (``SpeechStarted``, then ``Utterance`` and
``SpeechEnded``). A stage can decide for its own calls — set ``turn_taking``, or return an
analyzer of its own from :meth:`Stage.turn_analyzer`::

    from engine.media.turn import Question

    class Patient:                                  # any object with this coroutine method
        async def probability(self, question: Question) -> float:
            # P(the caller has finished): question.audio is the turn so far (8 kHz),
            # question.silence_ms the pause, question.transcript the words if known.
            return 1.0 if question.silence_ms >= 800 else 0.0

    class MyAgent(Stage):
        def turn_analyzer(self) -> Patient:
            return Patient()

An analyzer is asked at growing pauses (300, 500, 800 ms by default) from a task of its own,
never from the frame loop; one that raises, or takes longer than ``SessionConfig.turn_timeout``,
ends that turn by the VAD rule. A stage that transcribes while the caller talks helps the
analyzer with :meth:`CallContext.note_transcript` (a turn whose words end on "and", "of", "the"
or a comma is not over).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import trio

from engine.media.channels import FrameChannel
from engine.media.codec import SAMPLE_RATE, resample, ulaw_encode
from engine.media.frames import (
    PCM,
    Audio,
    Dtmf,
    Frame,
    HangUp,
    Interrupt,
    Interrupted,
    PlayAudio,
    PlaybackDone,
    SpeechEnded,
    SpeechStarted,
    Utterance,
)

if TYPE_CHECKING:
    from engine.media.turn.analyzer import TurnAnalyzer

__all__ = ["CallContext", "Stage", "StageFactory"]


class CallContext:
    """One call as its stage sees it: identity, inbound frames, and the way to speak."""

    def __init__(
        self,
        *,
        call_sid: str,
        stream_sid: str,
        account_sid: str,
        parameters: Mapping[str, str],
        inbox: FrameChannel[Frame],
        playout: FrameChannel[Frame],
        play_now: Callable[[PlayAudio], Awaitable[bool]] | None = None,
        reserve: Callable[[int], Awaitable[None]] | None = None,
        note_transcript: Callable[[str | None], None] | None = None,
    ) -> None:
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self.parameters = parameters
        """The verified custom ``<Parameter>`` values of the stream (the token removed)."""
        self._inbox = inbox
        self._playout = playout
        self._play_now = play_now
        self._reserve = reserve
        self._note_transcript = note_transcript

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self._inbox.__aiter__()

    async def receive(self) -> Frame:
        """The next inbound frame."""
        return await self._inbox.receive()

    def note_transcript(self, text: str | None) -> None:
        """The words of the caller's open turn so far (a partial transcript), for the
        end-of-turn analyzer: a turn whose words cannot end a sentence (a trailing "and", "the",
        a comma) is not ended by it. Cheap, and safe from a worker thread; cleared at each end
        of turn; ignored when the call ends turns by the VAD alone."""
        if self._note_transcript is not None:
            self._note_transcript(text)

    async def play(self, pcm: PCM, *, rate: int = SAMPLE_RATE, label: str = "") -> None:
        """Queue int16 mono audio at ``rate`` Hz for the caller, under a reply ``label``.

        Waits while playout holds its fill of audio (``PlayoutConfig.max_queued_ms``), so a
        producer faster than real time is paced by the call and its memory stays bounded.
        """
        if pcm.dtype != np.int16:
            raise TypeError(f"play() takes int16 samples, not {pcm.dtype}")
        if rate != SAMPLE_RATE:
            pcm = resample(pcm, rate, SAMPLE_RATE)
        ulaw = ulaw_encode(pcm)
        if self._reserve is not None:
            await self._reserve(len(ulaw))
        await self._playout.send(PlayAudio(ulaw, label))

    async def play_ulaw(self, ulaw: bytes, *, label: str = "") -> None:
        """Queue 8 kHz μ-law bytes for the caller as they are (no transcoding).

        On the per-frame path (echo, speech-to-speech) this skips the scheduler: unpaced audio
        with nothing ahead of it is written to the socket right here, and otherwise it only
        waits — and so only checkpoints — when playout is full, as :meth:`play` does.
        """
        play_now = self._play_now
        if play_now is not None and await play_now(PlayAudio(ulaw, label)):
            return
        if self._reserve is not None:
            await self._reserve(len(ulaw))
        try:
            self._playout.send_nowait(PlayAudio(ulaw, label))
        except trio.WouldBlock:
            await self._playout.send(PlayAudio(ulaw, label))

    async def interrupt(self, reason: str = "interrupt") -> None:
        """Cut the bot's audio now, as the engine's barge-in does, whatever ``barge_in`` says.

        Audio queued before this call is dropped and playout sends ``clear``; then an
        :class:`~engine.media.frames.Interrupted` frame arrives with the cut reply's ``label``
        and ``heard_ms``. If nothing is queued or playing, nothing is sent and no frame follows.
        For stages whose model detects the caller's speech itself (``barge_in = False``).
        """
        await self._playout.send(Interrupt(reason))

    async def hang_up(self, reason: str = "hang-up", *, drain: bool = True) -> None:
        """End the call, after the queued audio has played unless ``drain`` is false."""
        await self._playout.send(HangUp(reason, drain))


class Stage:
    """Base class of AI stages. Override the ``on_*`` handlers you need, or :meth:`run`.

    Class attributes tune what the engine does around the stage:

    - ``receives_audio``: deliver every inbound 20 ms :class:`Audio` frame (default off; turn
      events arrive either way). Audio frames are live: a slow stage loses the oldest, counted.
    - ``turn_detection``: run VAD / end-of-turn on the caller's audio (default on).
    - ``barge_in``: when the caller speaks over queued or playing bot audio, send ``clear``
      and deliver :class:`Interrupted` (default on). A stage that detects barge-in itself turns
      this off and calls :meth:`CallContext.interrupt`.
    - ``paced``: keep only a small lead of audio queued at Twilio (default on). A stage whose
      audio comes in real time (echo) turns it off so nothing waits.
    - ``inline_audio``: call :meth:`on_audio` for every inbound frame right in the call's
      reader task, instead of queueing :class:`Audio` for :meth:`run` (default off). It saves
      a task switch per frame, for per-frame work that never waits long (echo, a meter, a
      hand-off to a bounded queue of your own); while it runs, the call reads nothing. An
      exception in it ends the call as one in :meth:`run` does.
    - ``turn_taking``: ``"vad"`` or ``"smart-turn"`` to fix how this stage's calls end turns;
      ``None`` (default) takes the server's choice. :meth:`turn_analyzer` overrides both.
    """

    receives_audio: ClassVar[bool] = False
    turn_detection: ClassVar[bool] = True
    barge_in: ClassVar[bool] = True
    paced: ClassVar[bool] = True
    inline_audio: ClassVar[bool] = False
    turn_taking: ClassVar[Literal["vad", "smart-turn"] | None] = None

    def turn_analyzer(self) -> TurnAnalyzer | None:
        """An end-of-turn analyzer of the stage's own for this call (see the module docstring),
        or ``None`` (the default) for the engine's (``turn_taking``). Called once per call,
        before :meth:`run`."""
        return None

    async def run(self, call: CallContext) -> None:
        """Handle the call's frames until it ends; the default dispatches to ``on_*``."""
        await self.on_start(call)
        async for frame in call:
            match frame:
                case Audio():
                    await self.on_audio(call, frame)
                case Utterance():
                    await self.on_utterance(call, frame)
                case SpeechStarted():
                    await self.on_speech_started(call, frame)
                case SpeechEnded():
                    await self.on_speech_ended(call, frame)
                case Interrupted():
                    await self.on_interrupted(call, frame)
                case PlaybackDone():
                    await self.on_playback_done(call, frame)
                case Dtmf():
                    await self.on_dtmf(call, frame)

    async def on_start(self, call: CallContext) -> None:
        """The stream has started (the caller's audio is about to flow)."""

    async def on_audio(self, call: CallContext, audio: Audio) -> None:
        """One inbound 20 ms frame (only with ``receives_audio = True``)."""

    async def on_speech_started(self, call: CallContext, event: SpeechStarted) -> None:
        """The caller started talking."""

    async def on_utterance(self, call: CallContext, utterance: Utterance) -> None:
        """The caller finished a turn."""

    async def on_speech_ended(self, call: CallContext, event: SpeechEnded) -> None:
        """The caller stopped talking (after the hangover)."""

    async def on_interrupted(self, call: CallContext, event: Interrupted) -> None:
        """The caller barged in; ``event.heard_ms`` of the reply was heard."""

    async def on_playback_done(self, call: CallContext, event: PlaybackDone) -> None:
        """A reply finished playing."""

    async def on_dtmf(self, call: CallContext, event: Dtmf) -> None:
        """The caller pressed a key."""


StageFactory = Callable[[], Stage]
"""Makes the stage for one call; ``--pipeline module:factory`` names one."""
