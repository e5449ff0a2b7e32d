"""The ``llm`` pipeline's stage, :class:`LLMAgent`: it hears the caller, streams the model's
answer, speaks it sentence by sentence, and keeps the conversation's history to what the caller
heard. See :mod:`pipelines.llm` for how a call goes.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import certifi
import httpx
import trio

from engine.media.codec import SAMPLE_RATE
from engine.media.frames import PCM, Interrupted, PlaybackDone, SpeechStarted
from engine.media.stage import CallContext
from pipelines.conversation import APOLOGY, ConversationAgent, Turn, in_worker_thread, quote
from pipelines.llm.chat import LLMConfig, LLMError, stream_chat
from pipelines.llm.reply import Spoken, _Reply
from pipelines.llm.text import SentenceSplitter, _has_words, speak_sentence, speakable
from pipelines.recognition import make_recognizer
from pipelines.stt import SpeechRecognizer

__all__ = ["LLMAgent"]

log = logging.getLogger("pipelines.llm")  # the package's logger, as before it was split

_SSL_CONTEXT: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every call's client: building one (loading the CA bundle) takes tens
    of milliseconds, too long for the event loop and wasteful per call."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context(cafile=certifi.where())
    return _SSL_CONTEXT


class LLMAgent(ConversationAgent):
    """The LLM voice agent for one call. See the module documentation.

    ``base_url``, ``model``, ``api_key``, ``system_prompt`` and ``tuning`` (the other
    :class:`LLMConfig` fields) override the environment; ``config`` replaces it altogether.
    Raises :class:`~engine.errors.ConfigError` when no base URL or model is configured.
    ``recognizer`` makes the call's :class:`~pipelines.stt.SpeechRecognizer` (in a worker thread;
    default :func:`~pipelines.recognition.make_recognizer`, decoding in a worker process);
    ``voice`` and ``words_per_minute`` go to eSpeak NG.
    """

    agent_name = "llm"
    hang_up_reason = "llm-error"
    _log = log

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        system_prompt: str | None = None,
        config: LLMConfig | None = None,
        recognizer: Callable[[], SpeechRecognizer] = make_recognizer,
        voice: str = "en-us",
        words_per_minute: int = 165,
        batch_ms: int = 160,
        pre_roll_ms: int = 300,
        **tuning: Any,
    ) -> None:
        """Configure the agent (nothing heavy happens here)."""
        self.config = config or LLMConfig.from_env(
            base_url=base_url, model=model, api_key=api_key, system_prompt=system_prompt, **tuning
        )
        super().__init__(
            recognizer,
            voice=voice,
            words_per_minute=words_per_minute,
            batch_ms=batch_ms,
            pre_roll_ms=pre_roll_ms,
        )
        self.history: list[dict[str, str]] = []
        """The conversation: ``{"role": "user" | "assistant", "content": …}``, oldest first."""
        self._client: httpx.AsyncClient | None = None
        self._replies: dict[str, _Reply] = {}

    async def converse(self, call: CallContext) -> None:
        """Converse with an HTTP client open for the model's requests."""
        verify = _SSL_CONTEXT
        if verify is None:
            verify = await trio.to_thread.run_sync(_ssl_context)
        async with httpx.AsyncClient(verify=verify) as client:
            self._client = client
            try:
                await super().converse(call)
            finally:
                self._client = None

    def request_messages(self) -> list[dict[str, str]]:
        """The history as the next request carries it (without the system prompt): the latest
        ``max_history`` messages, empty ones left out, consecutive same-role messages merged,
        starting with a user message."""
        merged: list[dict[str, str]] = []
        for message in self.history:
            content = message["content"].strip()
            if not content:
                continue
            if merged and merged[-1]["role"] == message["role"]:
                merged[-1] = {
                    "role": message["role"],
                    "content": merged[-1]["content"] + " " + content,
                }
            else:
                merged.append({"role": message["role"], "content": content})
        recent = merged[-self.config.max_history :]
        while recent and recent[0]["role"] != "user":
            recent.pop(0)
        return recent

    def log_failure(self, call: CallContext, exc: Exception) -> None:
        """Log a failure: the model's (:class:`LLMError`) as one line, others with a traceback."""
        if isinstance(exc, LLMError):
            log.error("call %s: %s", call.call_sid, exc)
        else:
            super().log_failure(call, exc)

    def apology_audio(self) -> PCM:
        """:data:`~pipelines.conversation.APOLOGY`, spoken as a sentence of a reply is."""
        return self._synthesize(APOLOGY)

    # -- answering ---------------------------------------------------------------------------------

    def wants_reply(self, heard: str) -> bool:
        """Noise, or nothing the recognizer could make out, gets no reply."""
        return bool(heard.strip())

    def begin_reply(self, call: CallContext, turn: Turn) -> Callable[[], Awaitable[None]]:
        """Add the user's message and the reply's (empty so far) to the history, and return the
        task that streams the model's answer for the history as it stands now."""
        self.history.append({"role": "user", "content": turn.heard})
        messages = self.request_messages()
        reply = _Reply(turn.label, {"role": "assistant", "content": ""}, scope=turn.scope)
        self.history.append(reply.message)
        self._replies[reply.label] = reply
        return partial(self._reply, call, reply, messages, turn.ended_at)

    async def _reply(
        self, call: CallContext, reply: _Reply, messages: list[dict[str, str]], ended_at: float
    ) -> None:
        assert self._client is not None
        splitter = SentenceSplitter()
        first_token = True

        async def on_text(delta: str) -> None:
            nonlocal first_token
            if first_token:
                first_token = False
                log.info(
                    "call %s: %s first token %d ms after end of turn",
                    call.call_sid,
                    reply.label,
                    (trio.current_time() - ended_at) * 1000,
                )
            for sentence in splitter.feed(delta):
                await self._say(call, reply, sentence, ended_at)

        with reply.scope:
            try:
                with trio.fail_after(self.config.reply_timeout):
                    await stream_chat(self._client, self.config, messages, on_text)
                    for sentence in splitter.flush():
                        await self._say(call, reply, sentence, ended_at)
                reply.complete = True
            except trio.TooSlowError:
                raise LLMError(
                    f"the model's reply took longer than {self.config.reply_timeout:g} s"
                ) from None
            finally:
                reply.producing = False
                self._update(reply)
                log.debug(  # what was said is call content: never at INFO
                    "call %s: %s %s%s",
                    call.call_sid,
                    reply.label,
                    quote(" ".join(s.text for s in reply.spoken)),
                    "" if reply.complete else " (cut short)",
                )

    async def _say(self, call: CallContext, reply: _Reply, sentence: str, ended_at: float) -> None:
        if not _has_words(speakable(sentence)):
            return
        pcm = await in_worker_thread(self._synthesize, sentence)
        if not len(pcm):
            return
        # Count it as queued before the send: the frame loop may see a barge-in while play()
        # yields after queueing, and must know this sentence is out there.
        reply.spoken.append(Spoken(sentence, len(pcm) * 1000 / SAMPLE_RATE))
        try:
            await call.play(pcm, label=reply.label)
        except BaseException:
            reply.spoken.pop()  # a failed or cancelled send queued nothing
            raise
        if len(reply.spoken) == 1:
            log.info(
                "call %s: %s first audio queued %d ms after end of turn",
                call.call_sid,
                reply.label,
                (trio.current_time() - ended_at) * 1000,
            )
        self._update(reply)

    def _synthesize(self, sentence: str) -> PCM:
        return speak_sentence(sentence, voice=self._voice, words_per_minute=self._wpm)

    def _update(self, reply: _Reply) -> None:
        reply.message["content"] = reply.text()
        if not reply.producing and not reply.message["content"]:
            # Cut before anything was queued: it said nothing, so it leaves no message.
            self.history[:] = [m for m in self.history if m is not reply.message]

    # -- barge-in ---------------------------------------------------------------------------------

    async def on_speech_started(self, call: CallContext, event: SpeechStarted) -> None:
        """The caller started talking: stop the latest reply if it is still being made (the new
        turn supersedes it), and clear any of its audio queued after the engine's barge-in cut.

        Playout handles this ``SpeechStarted`` before the stage sees it, so whatever the
        ``interrupt`` finds queued is a sentence the reply task raced in after the cut; when
        nothing is, it does nothing.
        """
        reply = self._replies.get(self._latest.label) if self._latest is not None else None
        if reply is None:
            return
        reply.scope.cancel()
        if reply.spoken:
            await call.interrupt("caller speech")

    async def on_interrupted(self, call: CallContext, event: Interrupted) -> None:
        """Rewrite the interrupted reply's message to what the caller heard of it."""
        reply = self._replies.get(event.label)
        if reply is None or reply.heard_ms is not None:
            return  # not a reply of ours, or already cut (a second clear of stray audio)
        reply.heard_ms = reply.drained_ms + event.heard_ms
        reply.scope.cancel()
        self._update(reply)
        log.debug(
            "call %s: %s interrupted after %d ms heard (%d ms dropped): %s",
            call.call_sid,
            event.label,
            reply.heard_ms,
            event.dropped_ms,
            quote(reply.message["content"]),
        )

    async def on_playback_done(self, call: CallContext, event: PlaybackDone) -> None:
        """Count what the caller heard of a reply whose queued audio drained."""
        reply = self._replies.get(event.label)
        if reply is not None and reply.heard_ms is None:
            reply.drained_ms += event.heard_ms
        log.debug("call %s: %s played (%d ms)", call.call_sid, event.label, event.heard_ms)
