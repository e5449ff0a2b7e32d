"""Streaming speech-to-text for phone audio with PocketSphinx (offline, model in the wheel).

A :class:`Recognizer` decodes one call: :meth:`~Recognizer.begin` a turn, :meth:`~Recognizer.feed`
it 8 kHz int16 audio as it arrives (it returns the partial hypothesis whenever that changes) and
:meth:`~Recognizer.finish` it for the final transcript. Every method is synchronous and CPU-bound:
a stage calls them from a worker thread, never on the event loop.

How the phone audio is prepared, and why (numbers: WER on the 20 sentences of
``tests/data/sentences.txt`` spoken by eSpeak NG through the μ-law path, see
``tests/pipelines/test_stt.py``):

- The bundled ``en-us`` acoustic model is wideband (16 kHz, mel filters up to 6.8 kHz). Audio is
  resampled 8 → 16 kHz with a streaming :class:`~engine.media.codec.Resampler`. Decoding at
  ``samprate=8000`` directly is not possible with this model (its filter bank reaches past 4 kHz),
  and a copy of the model with the filter bank cut to 3.5–4 kHz decodes garbage (WER 0.96).
- A little deterministic comfort noise (≈ −50 dBFS) is mixed in before resampling: μ-law silence
  and synthetic speech hold runs of exact zeros, which the model has never heard (WER 0.85 without,
  ≈ 0.72 with).
- The cepstral mean starts from a prior measured on phone speech instead of the model's default,
  which is tuned for close-talking 16 kHz microphones: with the default every new call starts
  badly (WER 0.97 with a fresh decoder per utterance). Within a call the mean keeps adapting.
- The second (flat-lexicon) search pass is off: it costs ~0.4 s at the end of every utterance —
  straight onto turn latency — for no measurable accuracy (0.72 with it, 0.73–0.80 without).
- At most 3000 active HMMs per frame (default 30 000): decoding takes ~0.2–0.25 s of CPU per
  second of speech instead of ~0.35–0.5, at no cost in accuracy (0.71–0.76).
- Tried and not kept (issue #4; each measured on the test set and on 10 other sentences in
  another eSpeak voice and speed, with a cepstral-mean prior re-measured for every front end;
  run-to-run spread is ±0.04, so these are all "no change" or worse):
  the narrowband filter bank (``upperf`` 3500–4000, ``samprate`` 8000, set after the model's
  ``feat.params`` with ``reinit_feat``) 0.95–1.0; filling the empty 4–8 kHz band with noise
  or a mirrored copy of 2.5–4 kHz 0.68–0.79; ``remove_noise`` off, ``lw`` 5–10, ``wip`` 0.2
  0.68–0.79; the flat-lexicon pass or 30 000 HMMs 0.74–0.77. The same model on the same
  sentences as clean 16 kHz audio scores 0.36–0.38, so the 0.35 target is out of reach for it.

Decoders are slow to build (~0.35 s: acoustic model and dictionary) and cannot share their model
through the Python API, so finished recognizers hand theirs back to a process-wide pool
(:func:`preload` fills it ahead of the first call) and a new call only resets one.

PocketSphinx 5.1 holds the GIL while it decodes, so a worker thread keeps the event loop free
only between calls into it: :meth:`Recognizer.feed` hands audio over in slices of at most 40 ms
so no single hold is long (5–20 ms). The one long hold is the best-path search in
:meth:`Recognizer.finish`, ~60–90 ms once per turn (turning it off saves that but costs ~0.06
WER). Even so, a busy recognizer stalls a server's event loop for tens of milliseconds at a
time, which is why the agents decode in worker processes (:mod:`pipelines.recognition`, whose
:class:`~pipelines.recognition.RemoteRecognizer` offers the same :class:`SpeechRecognizer`
interface); a :class:`Recognizer` is what runs inside them.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol, Self

import numpy as np
import pocketsphinx  # type: ignore[import-untyped]

from engine.media.codec import SAMPLE_RATE, Resampler
from engine.media.frames import PCM

__all__ = ["DECODER_RATE", "Recognizer", "RecognizerError", "SpeechRecognizer", "preload"]

DECODER_RATE = 16_000
"""The sample rate the acoustic model was trained on; phone audio is resampled to it."""

_DECODER_OPTIONS: dict[str, Any] = {
    "samprate": DECODER_RATE,
    "fwdflat": False,
    "bestpath": True,
    "maxhmmpf": 3000,
    "loglevel": "FATAL",
}
_CMN_PRIOR = "56,27.4,-40.5,54.6,-29.7,4.0,6.1,-37.6,17.6,-21.8,6.3,2.8,-17.7"
"""Cepstral mean of 8 kHz μ-law speech as this front end sees it, measured on held-out
sentences (not the test set)."""
_COMFORT_NOISE_RMS = 100.0
_SLICE = DECODER_RATE * 40 // 1000  # samples per process_raw call (40 ms)
_MAX_IDLE = 8


class RecognizerError(RuntimeError):
    """Recognition failed or cannot go on: the recognizer is closed, its decoder failed, or (for a
    :class:`~pipelines.recognition.RemoteRecognizer`) its worker process died or is gone."""


class SpeechRecognizer(Protocol):
    """What the listening agents need of a recognizer (:class:`Recognizer` in this process, or
    :class:`~pipelines.recognition.RemoteRecognizer` in a worker process). Every method blocks:
    call them from a worker thread, one thread at a time."""

    def begin(self) -> None:
        """Start a turn (discarding one still open)."""

    def feed(self, pcm: PCM) -> str | None:
        """Decode the next 8 kHz int16 samples; return the partial hypothesis if it changed."""

    def finish(self) -> str:
        """End the turn and return its final transcript."""

    @property
    def partial(self) -> str:
        """The latest partial hypothesis of the open turn."""

    def close(self) -> None:
        """Release the decoder (idempotent)."""


class _DecoderPool:
    """Process-wide idle decoders; thread-safe."""

    def __init__(self, max_idle: int = _MAX_IDLE) -> None:
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._max_idle = max_idle
        self.built = 0
        self.build_seconds = 0.0

    def _build(self) -> Any:
        started = time.perf_counter()
        decoder = pocketsphinx.Decoder(**_DECODER_OPTIONS)
        elapsed = time.perf_counter() - started
        with self._lock:
            self.built += 1
            self.build_seconds += elapsed
        return decoder

    def acquire(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._build()

    def release(self, decoder: Any) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(decoder)

    def preload(self, count: int) -> float:
        started = time.perf_counter()
        while True:
            with self._lock:
                if len(self._idle) >= min(count, self._max_idle):
                    break
            decoder = self._build()
            self.release(decoder)
        return time.perf_counter() - started


_POOL = _DecoderPool()


def preload(count: int = 1) -> float:
    """Make sure ``count`` idle decoders are ready; return the seconds it took (0 if they were).

    Blocking and slow (~0.35 s per decoder): call it at start-up or from a worker thread.
    """
    return _POOL.preload(count)


class ClosesOnExit:
    """Mixin: ``with thing:`` calls ``thing.close()`` at the end of the block."""

    def close(self) -> None:
        """Release what the object holds (idempotent)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Recognizer(ClosesOnExit):
    """Streaming recognition of one call's caller audio (8 kHz int16).

    ``begin`` → ``feed`` … → ``finish`` per turn; ``begin`` may be left out (``feed`` starts a
    turn). The cepstral mean adapts across the turns of one recognizer, so use one per call.
    Call :meth:`close` (or use it as a context manager) when the call ends: the decoder goes back
    to the process-wide pool.

    Not thread-safe: one thread at a time (consecutive calls from different worker threads are
    fine). All methods block on CPU work; never call them on the event loop.
    """

    def __init__(self, *, seed: int = 0) -> None:
        """Take a decoder from the pool (building one, ~0.35 s, if none is idle).

        ``seed`` seeds the comfort noise, so results are reproducible.
        """
        self._decoder: Any = _POOL.acquire()
        self._decoder.set_cmn(_CMN_PRIOR)
        self._resampler = Resampler(SAMPLE_RATE, DECODER_RATE)
        self._rng = np.random.default_rng(seed)
        self._in_turn = False
        self._partial = ""
        self._closed = False
        self._healthy = True

    def begin(self) -> None:
        """Start a turn (discarding one still open)."""
        self._check_open()
        if self._in_turn:
            self._resampler.flush()
            self._call(self._decoder.end_utt)
        self._call(self._decoder.start_utt)
        self._in_turn = True
        self._partial = ""

    def feed(self, pcm: PCM) -> str | None:
        """Decode the next 8 kHz int16 samples; return the partial hypothesis if it changed."""
        if not self._in_turn:
            self.begin()
        if len(pcm):
            noisy = pcm + self._rng.normal(0.0, _COMFORT_NOISE_RMS, len(pcm))
            self._process(self._resampler.process(np.clip(noisy, -32768, 32767).astype(np.int16)))
        text = self._hypothesis()
        if text and text != self._partial:
            self._partial = text
            return text
        return None

    def finish(self) -> str:
        """End the turn and return its final transcript (lower case, may be empty)."""
        if not self._in_turn:
            self.begin()
        self._process(self._resampler.flush())
        self._call(self._decoder.end_utt)
        self._in_turn = False
        self._partial = ""
        return self._hypothesis()

    @property
    def partial(self) -> str:
        """The latest partial hypothesis of the open turn ("" if none)."""
        return self._partial

    def close(self) -> None:
        """End any open turn and return the decoder to the pool (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._in_turn and self._healthy:
            self._in_turn = False
            try:
                self._decoder.end_utt()
            except RuntimeError:
                self._healthy = False
        if self._healthy:
            _POOL.release(self._decoder)
        self._decoder = None

    def _check_open(self) -> None:
        if self._closed:
            raise RecognizerError("the recognizer is closed")

    def _call(self, method: Any) -> None:
        try:
            method()
        except BaseException:
            self._healthy = False
            raise

    def _process(self, pcm16k: PCM) -> None:
        self._check_open()
        decoder = self._decoder
        try:
            for i in range(0, len(pcm16k), _SLICE):
                decoder.process_raw(pcm16k[i : i + _SLICE].tobytes(), False, False)
        except BaseException:
            self._healthy = False
            raise

    def _hypothesis(self) -> str:
        hypothesis = self._decoder.hyp()
        return str(hypothesis.hypstr) if hypothesis is not None else ""
