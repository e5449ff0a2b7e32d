"""Whisper log-mel features for Smart Turn v3, in numpy (no ``transformers``, no ``torch``).

Smart Turn v3 reads the last 8 s of the caller at 16 kHz as Whisper features, exactly what
``transformers.WhisperFeatureExtractor(chunk_length=8)`` makes of a window that was first cut to
its last 8 s or padded with zeros *at the start* (so the end of speech always sits at the right
edge of the window, where the model was trained to look):

1. :func:`fit_window`: keep the last 128 000 samples, or left-pad with zeros to that length;
2. zero-mean, unit-variance normalisation of the whole window (padding included, as the
   reference does for an input that already has the full length);
3. a centred STFT (reflect padding, periodic Hann window of 400, hop 160: 801 frames of which the
   last is dropped) of the power spectrum, in float64 like the reference;
4. an 80-band Slaney mel filter bank (0–8 kHz, Slaney area normalisation), ``log10`` with a
   floor of 1e-10, dynamic range clipped to 8 (i.e. 80 dB) below the window's maximum, then
   ``(x + 4) / 4``.

Checked against ``transformers`` 5.x' ``WhisperFeatureExtractor`` and pipecat's vendored copy
(``tests/media/turn/test_turn_features.py`` checks against reference values computed with them
once).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "MODEL_RATE",
    "N_FRAMES",
    "N_MELS",
    "WINDOW_SAMPLES",
    "fit_window",
    "log_mel",
    "mel_filters",
]

MODEL_RATE = 16_000
"""Sample rate the features (and the model) expect."""
WINDOW_SAMPLES = 8 * MODEL_RATE
"""8 s: the model's window."""
N_FFT = 400
"""STFT window (25 ms)."""
HOP = 160
"""STFT hop (10 ms)."""
N_MELS = 80
"""Mel bands."""
N_FRAMES = WINDOW_SAMPLES // HOP
"""Feature frames per window (800, 10 ms each)."""
_MEL_FLOOR = 1e-10
_NORM_EPS = 1e-7

Floats = npt.NDArray[np.float64]
Floats32 = npt.NDArray[np.float32]


def _hz_to_mel(freq: Floats) -> Floats:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    mels = 3.0 * freq / 200.0
    log_region = freq >= 1000.0
    mels[log_region] = 15.0 + np.log(freq[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mels


def _mel_to_hz(mels: Floats) -> Floats:
    freq = 200.0 * mels / 3.0
    log_region = mels >= 15.0
    freq[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mels[log_region] - 15.0))
    return freq


@cache
def mel_filters() -> Floats:
    """The (201 frequency bins × 80 bands) Slaney-normalised triangular filter bank."""
    bins = N_FFT // 2 + 1
    edges = np.array([0.0, MODEL_RATE / 2], dtype=np.float64)
    mel_lo, mel_hi = _hz_to_mel(edges)
    filter_hz = _mel_to_hz(np.linspace(mel_lo, mel_hi, N_MELS + 2))
    fft_hz = np.linspace(0, MODEL_RATE // 2, bins)
    slopes = filter_hz[np.newaxis, :] - fft_hz[:, np.newaxis]
    widths = np.diff(filter_hz)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters: Floats = np.maximum(0.0, np.minimum(down, up))
    filters *= (2.0 / (filter_hz[2 : N_MELS + 2] - filter_hz[:N_MELS]))[np.newaxis, :]
    filters.setflags(write=False)
    return filters


@cache
def _hann() -> Floats:
    window: Floats = np.hanning(N_FFT + 1)[:-1]  # periodic, as torch.hann_window
    window.setflags(write=False)
    return window


def fit_window(audio: npt.NDArray[np.floating] | npt.NDArray[np.integer]) -> Floats32:
    """The last 8 s of 16 kHz ``audio`` as float32, zero-padded at the start to 8 s.

    Integer input is int16 PCM and is scaled to [-1, 1) (÷ 32768); float input is taken as is.
    """
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {x.shape}")
    scaled = (
        x.astype(np.float32) / np.float32(32768.0)
        if np.issubdtype(x.dtype, np.integer)
        else x.astype(np.float32, copy=False)
    )
    if len(scaled) >= WINDOW_SAMPLES:
        return np.ascontiguousarray(scaled[len(scaled) - WINDOW_SAMPLES :])
    out = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    if len(scaled):
        out[-len(scaled) :] = scaled
    return out


def log_mel(window: Floats32) -> Floats32:
    """Smart Turn's (80, 800) float32 input for one 8 s window (see :func:`fit_window`)."""
    if window.shape != (WINDOW_SAMPLES,):
        raise ValueError(f"expected {WINDOW_SAMPLES} samples, got shape {window.shape}")
    x = window.astype(np.float32, copy=False)
    x = (x - x.mean()) / np.sqrt(x.var() + np.float32(_NORM_EPS))  # float32, as the reference
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = sliding_window_view(padded, N_FFT)[::HOP]  # 801 frames
    spectrum = np.fft.rfft(frames * _hann(), axis=-1)
    power = spectrum.real**2 + spectrum.imag**2  # (801, 201)
    mel = np.maximum(_MEL_FLOOR, power @ mel_filters())  # (801, 80)
    logs = np.log10(mel[:-1].T)  # (80, 800): the last frame dropped, as the reference
    logs = np.maximum(logs, logs.max() - 8.0)
    out: Floats32 = ((logs + 4.0) / 4.0).astype(np.float32)
    return out
