"""The conversation loop the speech-to-text agents (``local``, ``llm``) share.

:class:`ConversationAgent` is the stage both agents build on; one call reads top to bottom:

- :meth:`~ConversationAgent.run` converses until the call ends; on a failure the caller hears
  :data:`APOLOGY` and the agent hangs up (only that call is affected).
- :meth:`~ConversationAgent.converse` is the frame loop. Caller audio and turn events go to the
  call's :class:`~pipelines.listening.Listener`; ``SpeechStarted``, ``Interrupted`` and
  ``PlaybackDone`` also go to the agent's :meth:`~engine.media.stage.Stage.on_speech_started`,
  :meth:`~engine.media.stage.Stage.on_interrupted` and
  :meth:`~engine.media.stage.Stage.on_playback_done`. Beside it runs the listening task, which
  recognizes the queued audio in a worker thread and, for each final transcript the agent
  :meth:`~ConversationAgent.wants_reply` to, starts a reply: the reply still being made is
  superseded (its cancel scope cancelled), the new one is numbered (``reply-N``, a
  :class:`Turn`) and runs as the task :meth:`~ConversationAgent.begin_reply` returns.
- Every task of the call is guarded: a failure is logged
  (:meth:`~ConversationAgent.log_failure`), stops the conversation without an exception group,
  and makes :meth:`~ConversationAgent.run` apologize.

A subclass says only what differs: how a reply is produced and spoken, what its playback events
mean to it, and its apology's audio. Heavy steps (decoding, synthesis, a responder) run in worker
threads under one process-wide :func:`heavy_work_limiter` (:func:`in_worker_thread`).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar, TypeVarTuple

import trio

from engine.media.frames import PCM, Audio, Interrupted, PlaybackDone, SpeechStarted, Utterance
from engine.media.stage import CallContext, Stage
from pipelines.listening import Listener
from pipelines.stt import SpeechRecognizer

__all__ = [
    "APOLOGY",
    "ConversationAgent",
    "Turn",
    "heavy_work_limiter",
    "in_worker_thread",
    "quote",
]

APOLOGY = "Sorry, something went wrong. Goodbye."
"""What the caller hears when the agent fails, before it hangs up."""

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar(
    "pipelines.conversation.heavy_work_limiter"
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


async def in_worker_thread(fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
    """``fn(*args)`` in a worker thread, under the :func:`heavy_work_limiter`."""
    return await trio.to_thread.run_sync(fn, *args, limiter=heavy_work_limiter())


def quote(text: str) -> str:
    """``text`` in double quotes, as the agents log what was heard and said."""
    return '"' + text.replace('"', "'") + '"'


@dataclass(eq=False)
class Turn:
    """One turn the agent answers: what it heard, and the reply it starts."""

    heard: str
    """The caller's final transcript."""
    label: str
    """The reply's playout label: ``reply-N``, N counting the call's replies from 1."""
    ended_at: float
    """``trio.current_time()`` when the caller's turn ended (its ``Utterance`` arrived)."""
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    """Cancels the making of the reply (a newer turn, or a barge-in, cuts it short)."""


class ConversationAgent(Stage, ABC):
    """A voice agent that hears turns and answers each; see the module documentation.

    Subclasses implement :meth:`begin_reply` and :meth:`apology_audio`, and may override
    :meth:`wants_reply`, :meth:`log_failure`, :meth:`converse` (to hold a resource for the call)
    and the ``on_speech_started`` / ``on_interrupted`` / ``on_playback_done`` handlers.
    """

    receives_audio = True

    agent_name: ClassVar[str] = "voice"
    """How log lines name the agent (``the <agent_name> agent failed``)."""
    hang_up_reason: ClassVar[str] = "agent-error"
    """The hang-up reason after a failure."""
    _log: ClassVar[logging.Logger] = logging.getLogger(__name__)

    def __init__(
        self,
        recognizer: Callable[[], SpeechRecognizer],
        *,
        voice: str,
        words_per_minute: int,
        batch_ms: int,
        pre_roll_ms: int,
    ) -> None:
        """Listen with ``recognizer`` (see :class:`~pipelines.listening.Listener`); speak with
        eSpeak NG's ``voice`` at ``words_per_minute``."""
        self._listener = Listener(recognizer, batch_ms=batch_ms, pre_roll_ms=pre_roll_ms)
        self._voice = voice
        self._wpm = words_per_minute
        self._turns = 0
        self._latest: Turn | None = None
        """The last turn answered (its reply may be over)."""
        self._failed = False

    # -- what a subclass says ---------------------------------------------------------------------

    @abstractmethod
    def begin_reply(self, call: CallContext, turn: Turn) -> Callable[[], Awaitable[None]]:
        """Start answering ``turn`` (on the event loop, before any other turn is heard): record
        what must be recorded now, and return the task that makes and plays the reply under
        ``turn.scope`` and ``turn.label``."""

    @abstractmethod
    def apology_audio(self) -> PCM:
        """:data:`APOLOGY` as 8 kHz audio (called in a worker thread)."""

    def wants_reply(self, heard: str) -> bool:
        """Whether the transcript ``heard`` gets a reply (by default every one does)."""
        return True

    def log_failure(self, call: CallContext, exc: Exception) -> None:
        """Log the failure ``exc`` that ends the conversation (called while handling it)."""
        self._log.exception("call %s: the %s agent failed", call.call_sid, self.agent_name)

    # -- the call ---------------------------------------------------------------------------------

    async def run(self, call: CallContext) -> None:
        """Converse until the call ends; on a failure, apologize and hang up."""
        try:
            await self.converse(call)
        except Exception as exc:
            self.log_failure(call, exc)
            self._failed = True
        if self._failed:
            await self._fail(call)

    async def converse(self, call: CallContext) -> None:
        """The frame loop, with the listening task (and the replies it starts) beside it."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guarded, call, nursery, self._listen, call, nursery)
                async for frame in call:
                    match frame:
                        case Audio():
                            self._listener.on_audio(frame)
                        case SpeechStarted():
                            self._listener.on_speech_started(frame)
                            await self.on_speech_started(call, frame)
                        case Utterance():
                            self._listener.on_end_of_turn()
                        case Interrupted():
                            await self.on_interrupted(call, frame)
                        case PlaybackDone():
                            await self.on_playback_done(call, frame)
                nursery.cancel_scope.cancel()  # the call's inbox closed: nothing more to do
        finally:
            await self._listener.aclose()

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
        except Exception as exc:
            self.log_failure(call, exc)
            self._failed = True
            nursery.cancel_scope.cancel()

    async def _listen(self, call: CallContext, nursery: trio.Nursery) -> None:
        while True:
            items = await self._listener.next_work()
            started = trio.current_time()
            finals = await in_worker_thread(self._listener.recognize, items, call.call_sid)
            # The words so far tell the end-of-turn analyzer (if the call has one) whether a
            # pause ends a sentence: "… and" does not.
            call.note_transcript(self._listener.partial)
            for heard, ended_at in finals:
                self._log.debug("call %s: heard %s", call.call_sid, quote(heard))
                self._log.debug(
                    "call %s: final transcript %d ms after end of turn (last batch %d ms)",
                    call.call_sid,
                    (trio.current_time() - ended_at) * 1000,
                    (trio.current_time() - started) * 1000,
                )
                self._start_reply(call, heard, ended_at, nursery)

    def _start_reply(
        self, call: CallContext, heard: str, ended_at: float, nursery: trio.Nursery
    ) -> None:
        if not self.wants_reply(heard):
            return
        if self._latest is not None:
            self._latest.scope.cancel()  # a newer turn supersedes a reply still being made
        self._turns += 1
        turn = Turn(heard, f"reply-{self._turns}", ended_at)
        reply = self.begin_reply(call, turn)
        self._latest = turn
        nursery.start_soon(self._guarded, call, nursery, reply)

    async def _fail(self, call: CallContext) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, call)  # keep taking frames: playout must deliver its own
            with trio.move_on_after(10):
                try:
                    pcm = await in_worker_thread(self.apology_audio)
                    await call.play(pcm, label="apology")
                except Exception:
                    self._log.exception("call %s: could not apologize", call.call_sid)
            await call.hang_up(self.hang_up_reason)


async def _drain(call: CallContext) -> None:
    async for _ in call:
        pass
