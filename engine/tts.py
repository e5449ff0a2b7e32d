"""Text to speech with eSpeak NG, from the ``espeakng-loader`` wheel (library and voices inside).

eSpeak NG keeps global state and is not re-entrant, so every synthesis holds one process-wide
lock; it is fast (a sentence takes a few milliseconds). Callers on an event loop run it in a
worker thread. Output is int16 mono at the library's native rate (22 050 Hz); :func:`speak_ulaw`
returns the 8 kHz μ-law a phone line carries.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from typing import Any

import espeakng_loader
import numpy as np

from engine.errors import EngineError
from engine.media.codec import SAMPLE_RATE, resample, ulaw_encode
from engine.media.frames import PCM

__all__ = ["TTSError", "speak_ulaw", "synthesize", "synthesize_chunks"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class TTSError(EngineError):
    """eSpeak NG could not be loaded or refused to speak."""


class _Espeak:
    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if rate <= 0:
            raise TTSError(f"espeak_Initialize failed ({rate})")
        self.lib: Any = lib
        self.rate: int = rate
        self.chunks: list[PCM] = []
        self._callback = _CALLBACK(self._on_samples)  # keep a reference: C holds a pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_samples(self, wav: Any, count: int, _events: Any) -> int:
        if count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16))
        return 0


_lock = threading.Lock()
_engine: _Espeak | None = None


def _get() -> _Espeak:
    global _engine
    if _engine is None:
        _engine = _Espeak()
    return _engine


def synthesize_chunks(
    text: str, *, voice: str = "en-us", words_per_minute: int = 165, pitch: int = 50
) -> Iterator[tuple[PCM, int]]:
    """Speak ``text``, yielding ``(samples, sample_rate)`` a sentence-sized piece at a time.

    Each clause is synthesized separately, so the first audio is ready before the whole text is.
    """
    for clause in _clauses(text):
        pcm, rate = synthesize(clause, voice=voice, words_per_minute=words_per_minute, pitch=pitch)
        if len(pcm):
            yield pcm, rate


def synthesize(
    text: str, *, voice: str = "en-us", words_per_minute: int = 165, pitch: int = 50
) -> tuple[PCM, int]:
    """Speak ``text``; return int16 mono samples and their sample rate."""
    data = text.encode("utf-8")
    with _lock:
        engine = _get()
        lib = engine.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise TTSError(f"unknown eSpeak NG voice {voice!r}")
        lib.espeak_SetParameter(_PARAM_RATE, words_per_minute, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        engine.chunks = []
        status = lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        chunks, engine.chunks = engine.chunks, []
    if status != 0:
        raise TTSError(f"espeak_Synth failed ({status})")
    pcm = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int16)
    return pcm, engine.rate


def speak_ulaw(text: str, *, voice: str = "en-us", words_per_minute: int = 165) -> bytes:
    """Speak ``text`` as 8 kHz μ-law, the audio of a phone call."""
    pcm, rate = synthesize(text, voice=voice, words_per_minute=words_per_minute)
    return ulaw_encode(resample(pcm, rate, SAMPLE_RATE))


def _clauses(text: str) -> list[str]:
    parts: list[str] = []
    current = ""
    for char in text:
        current += char
        if char in ".!?;" and current.strip():
            parts.append(current.strip())
            current = ""
    if current.strip():
        parts.append(current.strip())
    return parts
