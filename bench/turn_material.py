"""Real speech for the end-of-turn benchmark: recorded people, with the truth of every pause.

:func:`real_speech` makes each turn of ``tests/data/speech/`` (see ``SPEECH_SOURCES.md``
there) — a long sentence, or two clips of one sentence joined at the pause the reader made
between them — a caller stream of its own: 2 s of the recording's own line background (so the
noise floor is learnt, as in a call), the turn, 2.5 s of background. One stream per turn, because
the recordings' backgrounds differ (clean studio to noisy HF radio) and a jump between them
would read as speech.
The truth comes from ``truth.json`` (pocketsphinx forced alignment of the published texts, or
recognition for the radio monologue): each turn's first and last word, every pause of 150 ms or
more between words inside it, and the words with their times (an oracle transcript for the text
cue). :func:`synthetic_speech` gives the same view of :func:`bench.material.paused_speech`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.material import PHRASED_SENTENCES, PausedSpeech, paused_speech
from engine.media.codec import ulaw_decode

__all__ = ["DATA", "TURNS", "Speech", "real_speech", "synthetic_speech"]

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech"
"""Where the clips and ``truth.json`` lie."""
TURNS: tuple[tuple[str, ...], ...] = (
    ("jfk",),
    ("austen_0870",),
    ("austen_0880", "austen_0890"),
    ("austen_0920", "austen_0930"),
    ("ve9qrp",),
)
"""The turns of :func:`real_speech`: clips played back to back make one turn."""
LEAD_MS = 2000
"""Background before each turn (the noise floor tracker learns the line meanwhile)."""
TAIL_MS = 2500
"""Background after each turn."""


@dataclass(frozen=True)
class Speech:
    """A caller stream with its truth (``material``) and the words with their times (ms)."""

    name: str
    material: PausedSpeech
    words: list[tuple[str, int, int]] = field(default_factory=list)

    def transcript(self, now: int) -> str:
        """The words of the turn open at ``now`` that ended by then (an oracle transcriber)."""
        start = max((s for s, _ in self.material.sentences if s <= now), default=0)
        return " ".join(w for w, a, b in self.words if start <= a and b <= now)


def _background(ulaw: bytes, first_word_s: float, ms: int) -> bytes:
    """``ms`` of the clip's own background: the stretch from 60 ms to 40 ms before its first
    word, repeated (some clips open with a few ms of digital silence, which is skipped), so the
    line does not jump from digital silence to a noisy recording's floor at a turn."""
    bed = ulaw[60 * 8 : max(160 * 8, round(first_word_s * 1000 - 40) * 8)]
    return (bed * (ms * 8 // len(bed) + 1))[: ms * 8]


def real_speech() -> list[Speech]:
    """The recorded turns, one stream each (see the module docstring)."""
    truth = json.loads((DATA / "truth.json").read_text())
    out: list[Speech] = []
    for clips in TURNS:
        ulaws = [(DATA / f"{clip}.ulaw").read_bytes() for clip in clips]
        bed_first, bed_last = truth[clips[0]]["speech"][0], truth[clips[-1]]["speech"][0]
        parts = [_background(ulaws[0], bed_first, LEAD_MS)]
        at = LEAD_MS
        pauses: list[tuple[int, int]] = []
        words: list[tuple[str, int, int]] = []
        first_word: int | None = None
        last_end = 0
        for clip, ulaw in zip(clips, ulaws, strict=True):
            t = truth[clip]
            start, end = (at + round(x * 1000) for x in t["speech"])
            if first_word is None:
                first_word = start
            else:
                pauses.append((last_end, start))  # the reader's pause between the clips
            pauses += [(at + round(a * 1000), at + round(b * 1000)) for a, b in t["pauses"]]
            words += [(w, at + round(a * 1000), at + round(b * 1000)) for w, a, b in t["words"]]
            last_end = end
            parts.append(ulaw)
            at += len(ulaw) // 8
        assert first_word is not None
        parts.append(_background(ulaws[-1], bed_last, TAIL_MS))
        material = PausedSpeech(b"".join(parts), [(first_word, last_end)], sorted(pauses))
        out.append(Speech("+".join(clips), material, words))
    return out


def synthetic_speech(sentences: int = 12, seed: int = 0) -> Speech:
    """eSpeak NG sentences with inserted pauses (:func:`bench.material.paused_speech`); the
    "words" are whole phrases, timed from the pause truth (enough for the text cue)."""
    material = paused_speech(sentences, seed=seed)
    words: list[tuple[str, int, int]] = []
    pauses = iter(material.pauses)
    for i, (start, end) in enumerate(material.sentences):
        phrases = PHRASED_SENTENCES[i % len(PHRASED_SENTENCES)]
        at = start
        for k, phrase in enumerate(phrases):
            phrase_end = end if k == len(phrases) - 1 else next(pauses)[0]
            words.append((phrase.rstrip(".?!").lower(), at, phrase_end))
            at = phrase_end
    return Speech("synthetic", material, words)


def decode(speech: Speech) -> np.ndarray:
    """The stream as 8 kHz int16."""
    return ulaw_decode(speech.material.ulaw)
