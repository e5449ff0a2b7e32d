"""The model's side of the ``llm`` pipeline: where the OpenAI-compatible endpoint is and how to
talk to it (:class:`LLMConfig`), and the streaming chat-completions client (:func:`stream_chat`)
that reads the server-sent events a delta at a time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine.errors import ConfigError, EngineError

__all__ = ["DEFAULT_SYSTEM_PROMPT", "LLMConfig", "LLMError", "stream_chat"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly, helpful assistant answering a phone call. The caller's words come from "
    "speech recognition and may contain mistakes; if something is unclear, ask. Answer in one to "
    "three short sentences of plain spoken English: no lists, no markdown, no emoji."
)
"""The system prompt when ``LLM_SYSTEM_PROMPT`` is not set."""


class LLMError(EngineError):
    """The chat-completions endpoint failed: HTTP error, transport error, timeout, bad stream."""


# -- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LLMConfig:
    """Where the model is and how to talk to it. :meth:`from_env` fills what is not given."""

    base_url: str
    model: str
    api_key: str | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    connect_timeout: float = 5.0
    """Seconds to connect to the endpoint."""
    read_timeout: float = 20.0
    """Seconds allowed between two reads of the answer (the wait for the first token included)."""
    reply_timeout: float = 120.0
    """Seconds allowed for a whole reply, from the request to the last token."""
    max_history: int = 40
    """How many of the latest history messages a request carries (besides the system prompt)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Extra request fields (``temperature``, ``max_tokens``, …), merged into every body."""

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        system_prompt: str | None = None,
        **tuning: Any,
    ) -> LLMConfig:
        """The configuration from ``env`` (default ``os.environ``), the arguments winning.

        ``tuning`` sets the other fields (timeouts, ``max_history``, ``options``). Raises
        :class:`~engine.errors.ConfigError` for a missing or malformed base URL or a missing model.
        """
        env = os.environ if env is None else env
        url = (base_url or env.get("LLM_BASE_URL") or "").strip()
        if not url:
            raise ConfigError(
                "the llm pipeline needs the model's OpenAI-compatible endpoint: set LLM_BASE_URL "
                "(e.g. http://localhost:11434/v1) or pass base_url=…"
            )
        if not re.match(r"https?://[^/\s]+", url):
            raise ConfigError(f"LLM_BASE_URL must be an http:// or https:// URL, not {url!r}")
        name = (model or env.get("LLM_MODEL") or "").strip()
        if not name:
            raise ConfigError("the llm pipeline needs a model name: set LLM_MODEL or pass model=…")
        prompt = system_prompt if system_prompt is not None else env.get("LLM_SYSTEM_PROMPT")
        config = cls(
            base_url=url,
            model=name,
            api_key=api_key or env.get("LLM_API_KEY") or None,
            system_prompt=prompt or DEFAULT_SYSTEM_PROMPT,
            **tuning,
        )
        for knob in ("connect_timeout", "read_timeout", "reply_timeout"):
            if not getattr(config, knob) > 0:
                raise ConfigError(f"{knob} must be positive, not {getattr(config, knob)!r}")
        if config.max_history < 1:
            raise ConfigError(f"max_history must be at least 1, not {config.max_history}")
        return config

    @property
    def endpoint(self) -> str:
        """The URL requests go to: ``<base_url>/chat/completions`` (unless already given)."""
        url = self.base_url.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"

    def headers(self) -> dict[str, str]:
        """The request headers: JSON in, an event stream back, and the bearer key if any."""
        headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def timeout(self) -> httpx.Timeout:
        """The HTTP timeouts: ``connect_timeout`` to connect, ``read_timeout`` for the rest."""
        return httpx.Timeout(self.read_timeout, connect=self.connect_timeout)

    def body(self, messages: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        """The request body for ``messages`` (the system prompt is added here)."""
        return {
            **self.options,
            "model": self.model,
            "messages": [{"role": "system", "content": self.system_prompt}, *messages],
            "stream": True,
        }


# -- the streaming client ----------------------------------------------------------------------


async def stream_chat(
    client: httpx.AsyncClient,
    config: LLMConfig,
    messages: Sequence[Mapping[str, str]],
    on_text: Callable[[str], Awaitable[None]],
) -> str | None:
    """POST a streaming chat completion and await ``on_text(delta)`` for every piece of content.

    Returns the ``finish_reason`` (``None`` if the server sent none before ``[DONE]``). Raises
    :class:`LLMError` for an HTTP error status, a transport failure or timeout, an ``error``
    event, malformed JSON, or a stream that ends without ``[DONE]`` or a finish reason. Cancel
    the surrounding scope to stop: the connection is closed.
    """
    body = config.body(messages)
    try:
        async with client.stream(
            "POST", config.endpoint, json=body, headers=config.headers(), timeout=config.timeout()
        ) as response:
            if response.status_code != 200:
                detail = (await response.aread())[:300].decode("utf-8", "replace")
                raise LLMError(f"{config.endpoint} answered HTTP {response.status_code}: {detail}")
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("application/json"):
                return await _whole_completion(await response.aread(), on_text)
            finish: str | None = None
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, ": keep-alive" comments, event: / id: fields
                data = line[5:].strip()
                if data == "[DONE]":
                    return finish
                text, reason = _parse_chunk(data)
                finish = reason or finish
                if text:
                    await on_text(text)
            if finish is None:
                raise LLMError("the model's stream ended without [DONE]")
            return finish
    except httpx.TimeoutException as exc:
        raise LLMError(f"the model timed out ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise LLMError(f"cannot stream from {config.endpoint}: {exc!r}") from exc


def _parse_chunk(data: str) -> tuple[str, str | None]:
    """``(content delta, finish_reason)`` of one ``chat.completion.chunk``."""
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise LLMError(f"malformed event from the model: {data[:200]!r}") from exc
    if not isinstance(chunk, dict):
        raise LLMError(f"malformed event from the model: {data[:200]!r}")
    if chunk.get("error"):
        raise LLMError(f"the model reported an error: {json.dumps(chunk['error'])[:300]}")
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            return (content if isinstance(content, str) else ""), choice.get("finish_reason")
    return "", None  # e.g. a usage-only chunk


async def _whole_completion(raw: bytes, on_text: Callable[[str], Awaitable[None]]) -> str | None:
    """A non-streamed ``chat.completion`` (a server that ignored ``stream``)."""
    try:
        choice = json.loads(raw)["choices"][0]
        content = choice["message"].get("content") or ""
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise LLMError(f"malformed completion from the model: {raw[:200]!r}") from exc
    if content:
        await on_text(content)
    reason = choice.get("finish_reason")
    return reason if isinstance(reason, str) else None
