"""Prosody cue, sans-IO: did the voice rise or fall at the end of the speech?

A statement usually ends with a falling pitch; a speaker who holds the floor across a pause often
ends the phrase level or rising (a "continuation rise"). :func:`pitch_track` estimates F0 of 8 kHz
speech with a normalised autocorrelation (40 ms frames every 10 ms, 70–400 Hz);
:func:`final_pitch_slope` is the pitch movement, in semitones, over the last voiced 200 ms.
The benchmark (``bench/end_of_turn.py``) measures whether capping the model's probability on a
final rise helps; it is off by default (:attr:`~engine.media.turn.policy.PolicyConfig.rise_cap`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["final_pitch_slope", "pitch_track"]

RATE = 8000
"""Sample rate of the audio these functions take."""
_FRAME = 320  # 40 ms
_HOP = 80  # 10 ms
_MIN_LAG = RATE // 400
_MAX_LAG = RATE // 70
_VOICING = 0.45  # normalised autocorrelation peak needed to call a frame voiced
_MIN_POWER = 300.0**2  # about −40 dBFS

Floats = npt.NDArray[np.float64]


def pitch_track(pcm: npt.NDArray[np.int16]) -> Floats:
    """F0 in Hz of every 10 ms hop of 8 kHz ``pcm`` (NaN where unvoiced or quiet)."""
    x = pcm.astype(np.float64)
    count = max(0, (len(x) - _FRAME) // _HOP + 1)
    f0 = np.full(count, np.nan)
    if not count:
        return f0
    frames = np.lib.stride_tricks.sliding_window_view(x, _FRAME)[::_HOP][:count]
    frames = frames - frames.mean(axis=1, keepdims=True)
    power = (frames**2).mean(axis=1)
    spectrum = np.fft.rfft(frames, n=2 * _FRAME, axis=1)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, : _MAX_LAG + 1]
    energy = acf[:, :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = acf / np.where(energy > 0, energy, 1.0)
    window = normalised[:, _MIN_LAG : _MAX_LAG + 1]
    lags = window.argmax(axis=1) + _MIN_LAG
    peaks = window.max(axis=1)
    voiced = (peaks >= _VOICING) & (power >= _MIN_POWER)
    f0[voiced] = RATE / lags[voiced]
    return f0


def final_pitch_slope(pcm: npt.NDArray[np.int16], span_ms: int = 200) -> float | None:
    """Pitch change in semitones across the last ``span_ms`` of voiced frames of ``pcm``.

    A least-squares line through log-F0 of the last voiced frames (at least 5 of them), read
    over ``span_ms``; positive is a rise. ``None`` if there is too little voiced speech.
    """
    f0 = pitch_track(pcm)
    voiced = np.nonzero(~np.isnan(f0))[0]
    if len(voiced) < 5:
        return None
    last = voiced[voiced >= voiced[-1] - span_ms // 10]
    if len(last) < 5:
        return None
    semitones = 12.0 * np.log2(f0[last])
    slope = np.polyfit(last.astype(np.float64), semitones, 1)[0]  # semitones per 10 ms
    return float(slope * span_ms / 10)
