"""``local``: the offline voice agent — PocketSphinx hears, a :class:`Responder` answers, eSpeak NG
speaks. No network, no keys: ``voice-engine serve --pipeline pipelines.local:create``.

Per call::

    Audio ─▶ ring (300 ms pre-roll) ─SpeechStarted─▶ batches of 160 ms ─▶ Recognizer (thread)
    Utterance ─▶ finish (thread) ─▶ heard "…" ─▶ Responder pieces (thread)
                 ─▶ TTS per clause (thread) ─▶ resample 8 kHz (thread) ─▶ call.play("reply-N")

- Recognition streams while the caller talks: audio is only fed between ``SpeechStarted`` and the
  ``Utterance`` that ends the turn (with the last ~300 ms before the onset, so the first syllable
  is not lost), in batches — one worker-thread hop per ~160 ms, and pending batches are merged
  when the recognizer falls behind. Partial hypotheses are logged at DEBUG.
- At the end of the turn the final transcript goes to the responder; each piece of its reply is
  synthesized clause by clause and played as soon as it exists, so the first audio leaves before
  the rest of the reply is made. Barge-in (:class:`~engine.media.frames.Interrupted`) stops the
  production of that reply; a newer turn supersedes an older reply still being made.
- Every heavy step (decoding, TTS, resampling, the responder) runs in a worker thread under one
  process-wide :func:`heavy_work_limiter`. PocketSphinx holds the GIL while it decodes, so the
  decoding itself happens in recognizer worker processes (:mod:`pipelines.recognition`; the
  thread only waits for them), unless ``VOICE_ENGINE_STT_PROCESSES=0``.
- Logged for each turn: at INFO the turn latency (end of turn → first reply audio queued); at
  DEBUG, being call content, ``call <sid>: heard "<transcript>"`` and ``call <sid>: reply
  "<text>"``.
- If recognition, the responder or TTS fails, the caller hears a short apology and the agent hangs
  up (close 1000); only that call is affected.

The call's loop — listening, turns, superseded replies, failures — is the one the ``llm`` agent
shares (:class:`~pipelines.conversation.ConversationAgent`); this module holds what the ``local``
agent adds: how its replies are made (the responder, clause by clause) and what a barge-in or a
finished playback means to it.

Capacity: decoding costs ~0.2 s of CPU per second of speech. In-process, PocketSphinx holds the
GIL while it runs, so all calls of one server process share one core for recognition and stall
each other's audio; in worker processes (the default) recognition spreads over the cores
:func:`~pipelines.recognition.configured_processes` gives it, and the event loop stays free.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from functools import partial

import trio

from engine.media.codec import SAMPLE_RATE, resample
from engine.media.frames import PCM, Interrupted, PlaybackDone
from engine.media.stage import CallContext, Stage
from engine.tts import synthesize, synthesize_chunks
from pipelines.conversation import (
    APOLOGY,
    ConversationAgent,
    Turn,
    heavy_work_limiter,
    in_worker_thread,
    quote,
)
from pipelines.recognition import make_recognizer, preload
from pipelines.responder import Responder, RuleResponder
from pipelines.stt import SpeechRecognizer

__all__ = ["APOLOGY", "PRELOADED_DECODERS", "LocalAgent", "create", "heavy_work_limiter"]

log = logging.getLogger(__name__)

PRELOADED_DECODERS = 2
"""Speech decoders built at server start in each recognizer worker process (~0.35 s each; a call
that finds none idle builds one)."""


def _next_audio(chunks: Iterator[tuple[PCM, int]]) -> PCM | None:
    """Synthesize the next clause and bring it to 8 kHz (in a worker thread)."""
    item = next(chunks, None)
    if item is None:
        return None
    pcm, rate = item
    return resample(pcm, rate, SAMPLE_RATE)


def _next_piece(pieces: Iterator[str]) -> str | None:
    return next(pieces, None)


def _speak(text: str) -> PCM:
    pcm, rate = synthesize(text)
    return resample(pcm, rate, SAMPLE_RATE)


class LocalAgent(ConversationAgent):
    """The offline voice agent for one call. See the module documentation.

    ``responder`` makes the replies (default :class:`~pipelines.responder.RuleResponder`);
    ``recognizer`` makes the call's :class:`~pipelines.stt.SpeechRecognizer` (called once, in a
    worker thread; default :func:`~pipelines.recognition.make_recognizer`); ``voice`` and
    ``words_per_minute`` go to eSpeak NG.
    """

    agent_name = "local"
    _log = log

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        recognizer: Callable[[], SpeechRecognizer] = make_recognizer,
        voice: str = "en-us",
        words_per_minute: int = 165,
        batch_ms: int = 160,
        pre_roll_ms: int = 300,
    ) -> None:
        """Configure the agent (nothing heavy happens here)."""
        super().__init__(
            recognizer,
            voice=voice,
            words_per_minute=words_per_minute,
            batch_ms=batch_ms,
            pre_roll_ms=pre_roll_ms,
        )
        self.responder: Responder = responder if responder is not None else RuleResponder()
        self.history: list[tuple[str, str]] = []
        """The call so far: ``(heard, said)`` per answered turn."""

    def begin_reply(self, call: CallContext, turn: Turn) -> Callable[[], Awaitable[None]]:
        """The task that answers ``turn``: the responder's pieces, spoken clause by clause."""
        return partial(self._reply, call, turn)

    def apology_audio(self) -> PCM:
        """:data:`APOLOGY`, synthesized in one piece."""
        return _speak(APOLOGY)

    async def on_interrupted(self, call: CallContext, event: Interrupted) -> None:
        """Log the barge-in; stop making the reply it cut, if that is the latest."""
        log.info(
            "call %s: %s interrupted after %d ms heard (%d ms dropped)",
            call.call_sid,
            event.label,
            event.heard_ms,
            event.dropped_ms,
        )
        latest = self._latest
        if latest is not None and event.label == latest.label:
            latest.scope.cancel()

    async def on_playback_done(self, call: CallContext, event: PlaybackDone) -> None:
        """Log a reply that played to its end."""
        log.info("call %s: %s played (%d ms)", call.call_sid, event.label, event.heard_ms)

    async def _reply(self, call: CallContext, turn: Turn) -> None:
        said: list[str] = []
        pieces: Iterator[str] | None = None
        with turn.scope:
            try:
                pieces = await in_worker_thread(self._respond, turn.heard, tuple(self.history))
                first_audio = True
                while (piece := await in_worker_thread(_next_piece, pieces)) is not None:
                    await trio.lowlevel.checkpoint_if_cancelled()  # cut short while it was made
                    said.append(piece)
                    chunks = synthesize_chunks(piece, voice=self._voice, words_per_minute=self._wpm)
                    while (pcm := await in_worker_thread(_next_audio, chunks)) is not None:
                        await trio.lowlevel.checkpoint_if_cancelled()
                        if first_audio:
                            first_audio = False
                            log.info(
                                "call %s: %s first audio %d ms after end of turn",
                                call.call_sid,
                                turn.label,
                                (trio.current_time() - turn.ended_at) * 1000,
                            )
                        await call.play(pcm, label=turn.label)
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()
                text = " ".join(said)
                suffix = "" if not turn.scope.cancel_called else " (cut short)"
                log.debug("call %s: reply %s%s", call.call_sid, quote(text), suffix)
                self.history.append((turn.heard, text))

    def _respond(self, heard: str, history: tuple[tuple[str, str], ...]) -> Iterator[str]:
        return iter(self.responder.respond(heard, history))


_preloaded = False


def create() -> Stage:
    """The ``local`` pipeline's stage.

    The first call outside a trio run (the server's start-up check of the pipeline) starts the
    recognizer worker processes and waits until each has loaded :data:`PRELOADED_DECODERS`
    speech decoders, and loads eSpeak NG, so the first callers do not wait for them (later calls
    reuse the decoders of calls that ended). On an event loop (``voice-engine demo``) it only
    starts the worker processes, which then load while the loop runs on.
    """
    global _preloaded
    if not _preloaded:
        _preloaded = True
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:  # not on an event loop: loading here blocks nothing
            seconds = preload(PRELOADED_DECODERS)
            synthesize("Hello.")
            log.info("local agent: speech recognition and synthesis ready (%.2f s)", seconds)
        else:
            preload(PRELOADED_DECODERS, wait=False)
    return LocalAgent()
