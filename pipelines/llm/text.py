"""Text for the ``llm`` pipeline's voice: the model's stream cut into sentences as it arrives
(:class:`SentenceSplitter`), each one stripped of markdown (:func:`speakable`) and synthesized
(:func:`speak_sentence`).
"""

from __future__ import annotations

import re

from engine.media.codec import SAMPLE_RATE, resample
from engine.media.frames import PCM
from engine.tts import synthesize

__all__ = ["SentenceSplitter", "speak_sentence", "speakable", "split_sentences"]

# -- sentences -----------------------------------------------------------------------------------

_ENDS = frozenset(".!?;…")
_FULL_WIDTH_ENDS = frozenset("。！？")
_CLOSERS = frozenset("\"')]}”’»*_")
_ABBREVIATION_TEXT = """
    Mr Mrs Ms Mx Dr Prof Sr Jr St Mt Ft Rev Gen Capt Lt Sgt Col Gov Sen Rep Hon Inc Ltd Co Corp
    Dept Univ Ave Blvd Rd Hwy Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec Fig Vol Ch Pt
    vs etc approx cf al esp incl ca
"""
_ABBREVIATIONS = frozenset(_ABBREVIATION_TEXT.split())
"""Words that end with a period without ending a sentence (compared as written)."""


def _is_abbreviation(sentence_so_far: str) -> bool:
    """Whether the period just after ``sentence_so_far`` belongs to its last word."""
    words = sentence_so_far.split()
    if not words:
        return False
    word = words[-1].lstrip("\"'([{“‘«")
    if word in _ABBREVIATIONS or word.lower() in ("vs", "etc", "approx", "cf", "incl"):
        return True
    if len(word) == 1 and word.isupper() and word != "I":
        return True  # an initial: "J. R. R. Tolkien"
    if "." in word:
        return True  # "e.g", "i.e", "U.S", "a.m", "Ph.D"
    return len(words) == 1 and word.isdigit()  # a list number: "1. Open the app"


class SentenceSplitter:
    """Cuts streamed text into sentences as it arrives.

    :meth:`feed` takes the next piece of text (any size: a token, a word, a paragraph) and returns
    the sentences it completed; :meth:`flush` returns the rest at the end of the stream. A
    sentence ends at ``.`` ``!`` ``?`` ``;`` ``…`` (runs like ``?!`` and ``...`` included, closing
    quotes and brackets kept) followed by whitespace, at a newline, or at ``。！？``. Not ends:
    a period inside a word (``3.5``, ``example.com``), after an abbreviation (``Dr.``, ``etc.``,
    ``e.g.``), an initial (``J.``) or a list number (``1.``). Since the character after a stop
    decides, a stop at the very end of the text fed so far waits for the next piece.
    A sentence longer than ``max_chars`` with no end in sight is cut at its last comma, colon or
    dash, else its last space. Pieces with no letter or digit are not sentences of their own:
    they join the next sentence, or are dropped at the end.
    The result does not depend on how the text was chunked.
    """

    def __init__(self, max_chars: int = 250) -> None:
        """Make a splitter that forces a cut after ``max_chars`` characters."""
        self.max_chars = max_chars
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        """Add ``text``; return the sentences it completed (stripped, in order)."""
        self._buffer += text
        return self._cut(final=False)

    def flush(self) -> list[str]:
        """The end of the stream: return whatever is left as the last sentences."""
        sentences = self._cut(final=True)
        rest, self._buffer = " ".join(self._buffer.split()), ""
        if _has_words(rest):
            sentences.append(rest)
        return sentences

    def _cut(self, *, final: bool) -> list[str]:
        sentences: list[str] = []
        while (end := self._find_end(final=final)) is not None:
            sentence, self._buffer = " ".join(self._buffer[:end].split()), self._buffer[end:]
            sentences.append(sentence)
        return sentences

    def _find_end(self, *, final: bool) -> int | None:
        """The index just past the first sentence in the buffer, or ``None`` if none is complete."""
        buf = self._buffer
        i = 0
        while i < len(buf):
            char = buf[i]
            if char == "\n":
                if _has_words(buf[:i]):
                    return i + 1
            elif char in _FULL_WIDTH_ENDS:
                end = _past_closers(buf, i + 1)
                if _has_words(buf[:end]):
                    return end
                i = end
                continue
            elif char in _ENDS:
                j = i + 1
                while j < len(buf) and buf[j] in _ENDS:
                    j += 1
                j = _past_closers(buf, j)
                if j == len(buf) and not final:
                    return None  # the next character decides
                if j == len(buf) or buf[j].isspace():
                    lone_period = buf[i:j].rstrip("".join(_CLOSERS)) == "."
                    abbreviated = lone_period and _is_abbreviation(buf[:i])
                    if not abbreviated and _has_words(buf[:j]):
                        return j
                i = j
                continue
            i += 1
        if len(buf) > self.max_chars:
            return _forced_cut(buf, self.max_chars)
        return None


def _past_closers(buf: str, j: int) -> int:
    while j < len(buf) and buf[j] in _CLOSERS:
        j += 1
    return j


def _has_words(text: str) -> bool:
    return any(char.isalnum() for char in text)


def _forced_cut(buf: str, max_chars: int) -> int:
    head = buf[:max_chars]
    for separator in (", ", ": ", " - ", " – ", " — "):
        at = head.rfind(separator)
        if at > max_chars // 3:
            return at + len(separator.rstrip())
    at = head.rfind(" ")
    return at if at > 0 else max_chars


def split_sentences(text: str) -> list[str]:
    """``text`` cut into sentences as :class:`SentenceSplitter` cuts a stream."""
    splitter = SentenceSplitter()
    return [*splitter.feed(text), *splitter.flush()]


# -- speech --------------------------------------------------------------------------------------


def speakable(text: str) -> str:
    """``text`` without the markdown a model may write anyway (``**``, ``#``, backticks, bullets,
    ``[links](…)``), as it should be read out."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"^\s*(?:[-*+•]|#+)\s+", "", text)
    text = re.sub(r"[*_`#]{1,3}", "", text)
    return " ".join(text.split())


def speak_sentence(text: str, *, voice: str = "en-us", words_per_minute: int = 165) -> PCM:
    """Synthesize ``text`` (as :func:`speakable`) at 8 kHz: what the agent plays for a sentence.

    Blocking (a few ms): call it from a worker thread.
    """
    pcm, rate = synthesize(speakable(text), voice=voice, words_per_minute=words_per_minute)
    return resample(pcm, rate, SAMPLE_RATE)
