"""What a reply of the ``llm`` agent said, and what the caller heard of it: the sentences queued
for the caller with their durations (:class:`Spoken`), the part a barge-in left heard
(:func:`heard_text`), and the record of one reply that keeps its history message up to date.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import trio

__all__ = ["CUT_MARKER", "FRAME_MS", "Spoken", "heard_text"]

CUT_MARKER = "…"
"""Ends an assistant message that the caller did not hear to the end (barge-in)."""
FRAME_MS = 20
"""The length of one media frame, in milliseconds."""


class Spoken(NamedTuple):
    """One sentence queued for the caller and how long its audio lasts."""

    text: str
    duration_ms: float


def heard_text(spoken: Sequence[Spoken], heard_ms: float) -> str:
    """The part of ``spoken`` a caller who heard its first ``heard_ms`` of audio has heard.

    Whole sentences count while their audio fits in ``heard_ms``. In the sentence playing when
    the caller stopped listening, the heard share of its duration is taken as the same share of
    its characters, and a word counts as heard once half of its characters are (a sentence whose
    words were all heard counts whole: only its trailing silence was cut). When a word was not
    heard, :data:`CUT_MARKER` ends the text — right after the last heard word (``"How are…"``),
    or after a space when the cut fell between sentences (``"Hello there. …"``); if nothing at
    all was heard the result is the marker alone. Audio within 20 ms (one frame) of the end
    counts as heard to the end.
    """
    total = sum(s.duration_ms for s in spoken)
    if heard_ms >= total - FRAME_MS:
        return " ".join(s.text for s in spoken)
    kept: list[str] = []
    start = 0.0
    for sentence in spoken:
        end = start + sentence.duration_ms
        if heard_ms < end:
            share = max(0.0, heard_ms - start) / sentence.duration_ms
            words = _heard_words(sentence.text, share)
            if words != _heard_words(sentence.text, 1.0):
                if words:
                    return " ".join([*kept, words]) + CUT_MARKER
                break
            # every word heard: only the sentence's trailing silence was cut
        kept.append(sentence.text)
        start = end
    text = " ".join(kept)
    if len(kept) == len(spoken):
        return text
    return f"{text} {CUT_MARKER}" if text else CUT_MARKER


def _heard_words(text: str, share: float) -> str:
    """The words of ``text`` whose middle falls within its first ``share`` of characters."""
    limit = share * len(text)
    last_end = 0
    for match in re.finditer(r"\S+", text):
        if (match.start() + match.end()) / 2 > limit:
            break
        last_end = match.end()
    return text[:last_end].rstrip(",;:—– ")


@dataclass(eq=False)
class _Reply:
    """One reply: what was queued, what was heard, and the history message that records it."""

    label: str
    message: dict[str, str]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    spoken: list[Spoken] = field(default_factory=list)
    producing: bool = True
    complete: bool = False
    """Everything the model wrote was queued."""
    drained_ms: float = 0.0
    """Heard in earlier drains (``PlaybackDone``) of this reply's audio."""
    heard_ms: float | None = None
    """Set on barge-in: how much of the reply the caller heard."""

    def text(self) -> str:
        """The assistant message: what was spoken, or what was heard of it after a barge-in."""
        if self.heard_ms is None:
            return " ".join(s.text for s in self.spoken)
        text = heard_text(self.spoken, self.heard_ms)
        if self.spoken and not self.complete and not text.endswith(CUT_MARKER):
            text += " " + CUT_MARKER  # heard to the end of what was queued, but the model had more
        return text
