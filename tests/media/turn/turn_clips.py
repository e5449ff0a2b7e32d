"""Recorded clips for the end-of-turn tests (tests/data/speech, see SPEECH_SOURCES.md there)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from engine.media.codec import ulaw_decode
from engine.media.frames import PCM

DATA = Path(__file__).resolve().parents[2] / "data"
SPEECH = DATA / "speech"


@cache
def clip(name: str) -> PCM:
    """A clip, decoded to 8 kHz int16."""
    return ulaw_decode((SPEECH / f"{name}.ulaw").read_bytes())


@cache
def truth() -> dict[str, Any]:
    """The clips' word timings and pauses (seconds)."""
    result: dict[str, Any] = json.loads((SPEECH / "truth.json").read_text())
    return result


def upto(name: str, seconds: float) -> PCM:
    """The clip cut at ``seconds`` (frame-aligned)."""
    return clip(name)[: int(seconds * 50) * 160]


def silence(ms: int) -> PCM:
    """Digital silence."""
    return np.zeros(ms * 8, dtype=np.int16)


def frames(pcm: PCM) -> list[PCM]:
    """``pcm`` cut into 20 ms frames (a partial last frame is dropped)."""
    return [pcm[i : i + 160] for i in range(0, len(pcm) - 159, 160)]
