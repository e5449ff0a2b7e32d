"""Audio files for emulated callers: WAV (PCM, any rate) or raw μ-law, as 8 kHz μ-law bytes."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from engine.errors import EngineError
from engine.media.codec import SAMPLE_RATE, resample, ulaw_decode, ulaw_encode

__all__ = ["RAW_ULAW_SUFFIXES", "read_audio", "speech_bounds"]

RAW_ULAW_SUFFIXES = frozenset({".ulaw", ".mulaw", ".ul", ".raw"})
"""File suffixes read as headerless 8 kHz μ-law."""


def read_audio(path: str | Path) -> bytes:
    """Read ``path`` as the 8 kHz mono μ-law a phone call carries.

    WAV files hold PCM (8- or 16-bit, any rate, mono or stereo: channels are averaged);
    files named ``*.ulaw``, ``*.mulaw``, ``*.ul`` or ``*.raw`` are raw μ-law already.
    """
    path = Path(path)
    if path.suffix.lower() in RAW_ULAW_SUFFIXES:
        return path.read_bytes()
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise EngineError(f"{path}: not a PCM WAV file ({exc})") from exc
    if width == 2:
        samples = np.frombuffer(data, dtype="<i2").astype(np.int32)
    elif width == 1:
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.int32) - 128) << 8
    else:
        raise EngineError(f"{path}: {8 * width}-bit WAV is not supported (use 8 or 16 bit)")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int32)
    pcm = samples.astype(np.int16)
    if rate != SAMPLE_RATE:
        pcm = resample(pcm, rate, SAMPLE_RATE)
    return ulaw_encode(pcm)


def speech_bounds(ulaw: bytes, threshold: float = 300.0) -> tuple[int, int]:
    """Where speech starts and ends in ``ulaw`` (ms), by 20 ms frame energy; ``(0, 0)`` if none.

    The truth a benchmark measures the detector against: the first and the end of the last
    frame whose RMS level exceeds ``threshold`` (about −40 dBFS).
    """
    pcm = ulaw_decode(ulaw).astype(np.float64)
    frames = len(pcm) // 160
    if not frames:
        return 0, 0
    rms = np.sqrt((pcm[: frames * 160].reshape(frames, 160) ** 2).mean(axis=1))
    voiced = np.nonzero(rms > threshold)[0]
    if not len(voiced):
        return 0, 0
    return int(voiced[0]) * 20, int(voiced[-1] + 1) * 20
