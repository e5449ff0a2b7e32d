"""``llm``: a voice agent on any OpenAI-compatible chat model — PocketSphinx hears, the model
answers as a stream, eSpeak NG speaks it sentence by sentence while it streams.

``voice-engine serve --pipeline pipelines.llm:create``, with the model's endpoint in the
environment (arguments of :class:`LLMAgent` / :meth:`LLMConfig.from_env` override it):

==================== ===========================================================================
``LLM_BASE_URL``     required; the API root, e.g. ``http://localhost:11434/v1`` (Ollama),
                     ``http://localhost:8000/v1`` (vLLM), ``http://localhost:8080/v1`` (llama.cpp)
                     — requests go to ``<base>/chat/completions``
``LLM_MODEL``        required; the ``model`` of each request
``LLM_API_KEY``      optional; sent as ``Authorization: Bearer …``
``LLM_SYSTEM_PROMPT`` optional; the first message of every request (default
                     :data:`DEFAULT_SYSTEM_PROMPT`, a short phone-agent prompt)
==================== ===========================================================================

Without a base URL or a model, :func:`create` raises :class:`~engine.errors.ConfigError`, so the
server refuses to start (its loader probes the factory once).

Per call::

    Audio ─▶ pre-roll ring ─SpeechStarted─▶ 160 ms batches ─▶ Recognizer (thread)
    Utterance ─▶ final transcript (thread) ─▶ history += user ─▶ POST /chat/completions, stream
    SSE deltas ─▶ SentenceSplitter ─▶ per sentence: TTS + 8 kHz (thread) ─▶ call.play("reply-N")

- **Listening** works as in :mod:`pipelines.local`: audio is fed to a
  :class:`~pipelines.stt.Recognizer` only between ``SpeechStarted`` (with ~300 ms before it) and
  the ``Utterance`` ending the turn, whose final hypothesis is the user's message. An empty
  transcript (noise) gets no reply.
- **Streaming**: ``stream: true``; the server-sent events are read line by line (``data:
  {json}`` → ``choices[0].delta.content``, until ``data: [DONE]``), so each delta is used the
  moment it arrives. A server that ignores ``stream`` and answers one JSON completion works too.
- **Speaking as it streams**: the text is cut into sentences (:class:`SentenceSplitter`: ``.``
  ``!`` ``?`` ``;`` ``…`` followed by a space, or a newline; decimals like ``3.5``, abbreviations
  like ``Dr.`` and ``e.g.``, initials and list numbers are not ends) and each sentence is
  synthesized and queued as soon as it is complete, so the caller hears the first sentence while
  the model is still writing the rest. Synthesis runs in worker threads under the process-wide
  :func:`pipelines.conversation.heavy_work_limiter` (shared with speech recognition).
- **History**: :attr:`LLMAgent.history` is a list of ``{"role", "content"}`` messages. The
  user's message is appended at the end of the turn; the assistant's message holds what was
  *spoken*: the sentences queued for the caller, not text the model produced after the reply
  was cut. Each request sends the system prompt and the last :attr:`LLMConfig.max_history`
  messages (consecutive user messages merged, so roles alternate).
- **Barge-in**: when the caller starts talking (``SpeechStarted``), the reply still being
  produced is cancelled — the HTTP stream is closed, nothing more is synthesized — and the
  engine's barge-in cuts the audio; a sentence the reply raced into playout just after that cut
  is cleared by the stage's own :meth:`~engine.media.stage.CallContext.interrupt` (a no-op when
  nothing is queued). A newer turn also supersedes a reply. ``Interrupted(label, heard_ms)``
  then rewrites the assistant message to what the caller actually heard (:func:`heard_text`):
  every synthesized sentence's duration is known, so ``heard_ms`` (plus the ``PlaybackDone``
  counts of earlier drains of the same reply) maps to whole sentences and, for the sentence in
  progress, a share of its words proportional to the characters heard; the cut is marked with
  :data:`CUT_MARKER` (``…``). A reply cut before any of its audio was queued leaves no
  assistant message.
- **Failures** (HTTP errors, refused connections, timeouts, malformed events, an ``error``
  event, a stream that breaks off before ``[DONE]`` or a finish reason): the call hears
  :data:`APOLOGY` and is hung up (close 1000); only that call is affected. Timeouts:
  ``connect_timeout`` to connect, ``read_timeout`` between any two pieces of the answer (the
  first token included), ``reply_timeout`` for a whole reply.
- Logged per turn: at INFO the first token and first audio latency after the end of turn; at
  DEBUG, being call content, ``call <sid>: heard "<transcript>"`` and ``call <sid>: reply-N
  "<spoken text>"`` (with ``(cut short)`` after a barge-in).

The package: :mod:`~pipelines.llm.chat` (the configuration and the streaming client),
:mod:`~pipelines.llm.text` (sentences and their speech), :mod:`~pipelines.llm.reply` (what a reply
said and what was heard of it) and :mod:`~pipelines.llm.agent` (the stage). Hearing the caller
(:mod:`pipelines.listening`) and the call's loop (:mod:`pipelines.conversation`) are shared
with the ``local`` agent.
"""

from __future__ import annotations

import logging

import trio

from engine.media.stage import Stage
from engine.tts import synthesize
from pipelines.conversation import APOLOGY
from pipelines.llm.agent import LLMAgent
from pipelines.llm.chat import DEFAULT_SYSTEM_PROMPT, LLMConfig, LLMError, stream_chat
from pipelines.llm.reply import CUT_MARKER, Spoken, heard_text
from pipelines.llm.text import SentenceSplitter, speak_sentence, speakable, split_sentences
from pipelines.recognition import preload

__all__ = [
    "APOLOGY",
    "CUT_MARKER",
    "DEFAULT_SYSTEM_PROMPT",
    "LLMAgent",
    "LLMConfig",
    "LLMError",
    "SentenceSplitter",
    "Spoken",
    "create",
    "heard_text",
    "speak_sentence",
    "speakable",
    "split_sentences",
    "stream_chat",
]

log = logging.getLogger(__name__)

_preloaded = False


def create() -> Stage:
    """The ``llm`` pipeline's stage, configured from the environment.

    Raises :class:`~engine.errors.ConfigError` without ``LLM_BASE_URL`` or ``LLM_MODEL``. The
    first call outside a trio run (the server's start-up probe of the pipeline) also loads a
    speech decoder and eSpeak NG, so the first caller does not wait for them.
    """
    global _preloaded
    agent = LLMAgent()
    if not _preloaded:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:  # not on an event loop: loading here blocks nothing
            _preloaded = True
            seconds = preload(1)
            synthesize("Hello.")
            log.info("llm agent: speech decoder ready (%.2f s)", seconds)
    return agent
