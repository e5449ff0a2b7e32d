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
- Logged at INFO for each turn: ``call <sid>: heard "<transcript>"``, ``call <sid>: reply
  "<text>"``, and the turn latency (end of turn → first reply audio queued).
- If recognition, the responder or TTS fails, the caller hears a short apology and the agent hangs
  up (close 1000); only that call is affected.

Capacity: decoding costs ~0.2 s of CPU per second of speech. In-process, PocketSphinx holds the
GIL while it runs, so all calls of one server process share one core for recognition and stall
each other's audio; in worker processes (the default) recognition spreads over the cores
:func:`~pipelines.recognition.configured_processes` gives it, and the event loop stays free.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar, TypeVarTuple

import trio

from engine.media.codec import SAMPLE_RATE, resample
from engine.media.frames import PCM, Audio, Interrupted, PlaybackDone, SpeechStarted, Utterance
from engine.media.stage import CallContext, Stage
from engine.tts import synthesize, synthesize_chunks
from pipelines.listening import Listener
from pipelines.recognition import make_recognizer, preload
from pipelines.responder import Responder, RuleResponder
from pipelines.stt import SpeechRecognizer

__all__ = ["APOLOGY", "PRELOADED_DECODERS", "LocalAgent", "create", "heavy_work_limiter"]

log = logging.getLogger(__name__)

APOLOGY = "Sorry, something went wrong. Goodbye."
"""What the caller hears when the agent fails, before it hangs up."""

PRELOADED_DECODERS = 2
"""Speech decoders built at server start in each recognizer worker process (~0.35 s each; a call
that finds none idle builds one)."""

FRAME_MS = 20
_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar(
    "pipelines.local.heavy_work_limiter"
)


def heavy_work_limiter() -> trio.CapacityLimiter:
    """The limiter shared by every call's heavy worker-thread jobs (one per trio run).

    Its size is the number of CPUs (at least 2): more threads than cores would only queue on the
    CPU, and on the GIL that PocketSphinx holds while decoding.
    """
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(max(2, os.cpu_count() or 2))
        _LIMITER.set(limiter)
        return limiter


async def _in_thread(fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
    return await trio.to_thread.run_sync(fn, *args, limiter=heavy_work_limiter())


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


class LocalAgent(Stage):
    """The offline voice agent for one call. See the module documentation.

    ``responder`` makes the replies (default :class:`~pipelines.responder.RuleResponder`);
    ``recognizer`` makes the call's :class:`~pipelines.stt.SpeechRecognizer` (called once, in a
    worker thread; default :func:`~pipelines.recognition.make_recognizer`); ``voice`` and
    ``words_per_minute`` go to eSpeak NG.
    """

    receives_audio = True

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
        self.responder: Responder = responder if responder is not None else RuleResponder()
        self.history: list[tuple[str, str]] = []
        """The call so far: ``(heard, said)`` per answered turn."""
        self._listener = Listener(recognizer, batch_ms=batch_ms, pre_roll_ms=pre_roll_ms)
        self._voice = voice
        self._wpm = words_per_minute
        self._turns = 0
        self._reply_scope: trio.CancelScope | None = None
        self._reply_label = ""
        self._failed = False

    async def run(self, call: CallContext) -> None:
        """Converse until the call ends; on a failure, apologize and hang up."""
        try:
            await self._converse(call)
        except Exception:
            log.exception("call %s: the local agent failed", call.call_sid)
            self._failed = True
        if self._failed:
            await self._fail(call)

    async def _guarded(
        self,
        call: CallContext,
        nursery: trio.Nursery,
        fn: Callable[[*_Ts], Awaitable[None]],
        *args: *_Ts,
    ) -> None:
        """Run a task of the call; a failure stops the conversation (no exception groups)."""
        try:
            await fn(*args)
        except Exception:
            log.exception("call %s: the local agent failed", call.call_sid)
            self._failed = True
            nursery.cancel_scope.cancel()

    # -- listening ------------------------------------------------------------------------------

    async def _converse(self, call: CallContext) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guarded, call, nursery, self._listen, call, nursery)
                async for frame in call:
                    match frame:
                        case Audio():
                            self._listener.on_audio(frame)
                        case SpeechStarted():
                            self._listener.on_speech_started(frame)
                        case Utterance():
                            self._listener.on_end_of_turn()
                        case Interrupted():
                            self._on_interrupted(call, frame)
                        case PlaybackDone():
                            log.info(
                                "call %s: %s played (%d ms)",
                                call.call_sid,
                                frame.label,
                                frame.heard_ms,
                            )
                nursery.cancel_scope.cancel()  # the call's inbox closed: nothing more to do
        finally:
            await self._listener.aclose()

    async def _listen(self, call: CallContext, nursery: trio.Nursery) -> None:
        while True:
            items = await self._listener.next_work()
            started = trio.current_time()
            finals = await _in_thread(self._listener.recognize, items, call.call_sid)
            for text, ended_at in finals:
                log.debug("call %s: heard %s", call.call_sid, _quote(text))
                log.debug(
                    "call %s: final transcript %d ms after end of turn (last batch %d ms)",
                    call.call_sid,
                    (trio.current_time() - ended_at) * 1000,
                    (trio.current_time() - started) * 1000,
                )
                self._start_reply(call, text, ended_at, nursery)

    # -- answering ------------------------------------------------------------------------------

    def _start_reply(
        self, call: CallContext, heard: str, ended_at: float, nursery: trio.Nursery
    ) -> None:
        if self._reply_scope is not None:
            self._reply_scope.cancel()  # a newer turn supersedes a reply still being made
        self._turns += 1
        label = f"reply-{self._turns}"
        scope = trio.CancelScope()
        self._reply_scope, self._reply_label = scope, label
        nursery.start_soon(
            self._guarded, call, nursery, self._reply, call, heard, label, ended_at, scope
        )

    def _on_interrupted(self, call: CallContext, event: Interrupted) -> None:
        log.info(
            "call %s: %s interrupted after %d ms heard (%d ms dropped)",
            call.call_sid,
            event.label,
            event.heard_ms,
            event.dropped_ms,
        )
        if event.label == self._reply_label and self._reply_scope is not None:
            self._reply_scope.cancel()

    async def _reply(
        self,
        call: CallContext,
        heard: str,
        label: str,
        ended_at: float,
        scope: trio.CancelScope,
    ) -> None:
        said: list[str] = []
        pieces: Iterator[str] | None = None
        with scope:
            try:
                pieces = await _in_thread(self._respond, heard, tuple(self.history))
                first_audio = True
                while (piece := await _in_thread(_next_piece, pieces)) is not None:
                    await trio.lowlevel.checkpoint_if_cancelled()  # cut short while it was made
                    said.append(piece)
                    chunks = synthesize_chunks(piece, voice=self._voice, words_per_minute=self._wpm)
                    while (pcm := await _in_thread(_next_audio, chunks)) is not None:
                        await trio.lowlevel.checkpoint_if_cancelled()
                        if first_audio:
                            first_audio = False
                            log.info(
                                "call %s: %s first audio %d ms after end of turn",
                                call.call_sid,
                                label,
                                (trio.current_time() - ended_at) * 1000,
                            )
                        await call.play(pcm, label=label)
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()
                text = " ".join(said)
                suffix = "" if not scope.cancel_called else " (cut short)"
                log.debug("call %s: reply %s%s", call.call_sid, _quote(text), suffix)
                self.history.append((heard, text))
        if self._reply_scope is scope:
            self._reply_scope = None

    def _respond(self, heard: str, history: tuple[tuple[str, str], ...]) -> Iterator[str]:
        return iter(self.responder.respond(heard, history))

    # -- failing --------------------------------------------------------------------------------

    async def _fail(self, call: CallContext) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, call)  # playout must be able to deliver PlaybackDone
            with trio.move_on_after(10):
                try:
                    await call.play(await _in_thread(_speak, APOLOGY), label="apology")
                except Exception:
                    log.exception("call %s: could not apologize", call.call_sid)
            await call.hang_up("agent-error")


async def _drain(call: CallContext) -> None:
    async for _ in call:
        pass


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


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
