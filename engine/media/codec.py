"""G.711 μ-law codec and streaming resampling for the per-call media path.

Twilio Media Streams carry 8-bit μ-law (PCMU) audio at 8000 samples/s, mono, in
20 ms frames of 160 bytes (see PROTOCOL.md §7). Everything inside the engine works
on signed 16-bit linear PCM held in ``numpy`` ``int16`` arrays; this module converts
between the two and changes sample rates.

* :func:`ulaw_decode` / :func:`ulaw_encode` wrap :mod:`audioop` (the stdlib module on
  Python ≤ 3.12, the ``audioop-lts`` package on 3.13+). ``audioop``'s encoder uses
  CPython's 14-bit routine, which differs from the textbook 16-bit sox routine by one
  quantisation step on 381 negative inputs; that is expected and harmless.
* :class:`Resampler` is a stateful streaming resampler (``soxr``) that keeps filter
  state across frames, so there are no clicks at frame boundaries.
* :func:`resample` is the one-shot equivalent for whole buffers.

The module is pure: no I/O and no trio, safe to call from any thread.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

with warnings.catch_warnings():
    # The stdlib module is deprecated since 3.11 (PEP 594); on 3.13+ the audioop-lts
    # package provides the same module name without the warning.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "FRAME_BYTES",
    "SAMPLE_RATE",
    "SILENCE_BYTE",
    "Resampler",
    "resample",
    "ulaw_decode",
    "ulaw_encode",
]

SILENCE_BYTE = 0xFF
"""The μ-law code for +0, i.e. silence (``0x7F``, −0, also decodes to 0)."""

FRAME_BYTES = 160
"""Bytes (= samples) in one 20 ms μ-law frame at 8 kHz."""

SAMPLE_RATE = 8000
"""The sample rate of Twilio's μ-law audio, in Hz."""

_QUALITY = "HQ"
_EMPTY_INT16: npt.NDArray[np.int16] = np.zeros(0, dtype=np.int16)
_EMPTY_INT16.flags.writeable = False


def ulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """Decode μ-law bytes into an ``int16`` array with one sample per byte.

    The returned array is a read-only view over a fresh buffer; copy it before
    modifying in place. Output values lie in ±32124.
    """
    return np.frombuffer(audioop.ulaw2lin(data, 2), dtype=np.int16)


def ulaw_encode(pcm: npt.NDArray[Any] | bytes) -> bytes:
    """Encode signed 16-bit linear samples as μ-law bytes (one byte per sample).

    ``pcm`` is either an ``int16`` array (any shape, any byte order, contiguous or
    not; it is flattened in C order) or bytes of native-endian int16 samples
    (little-endian on every platform we support).

    Raises:
        TypeError: if ``pcm`` is an array whose dtype is not a 16-bit signed integer.
            Floats are never silently cast.
    """
    if isinstance(pcm, np.ndarray):
        if pcm.dtype.kind != "i" or pcm.dtype.itemsize != 2:
            raise TypeError(f"ulaw_encode needs int16 samples, got dtype {pcm.dtype}")
        pcm = pcm.astype(np.int16, copy=False).tobytes()
    return audioop.lin2ulaw(pcm, 2)


def _check_int16(pcm: npt.NDArray[Any]) -> None:
    if pcm.dtype != np.int16:
        raise TypeError(f"expected int16 samples, got dtype {pcm.dtype}")


class Resampler:
    """A streaming mono ``int16`` resampler that keeps filter state across frames.

    Feed consecutive chunks (e.g. 20 ms frames) to :meth:`process`; the concatenated
    outputs are the same signal as a one-shot resample of the concatenated inputs,
    without discontinuities at chunk boundaries. ``soxr`` compensates its filter
    delay by holding back output at the start, so early calls may return fewer
    samples (or none); call :meth:`flush` at the end of the stream to get the tail.
    Over a whole stream the output length is ``round(len(input) * out_rate / in_rate)``.

    ``soxr`` dithers its ``int16`` output, so results are not bit-identical from run
    to run (differences of about ±2 LSB); do not compare resampled audio exactly.

    If ``in_rate == out_rate`` the samples pass through unchanged without ``soxr``.
    Not thread-safe: use one instance per stream.
    """

    __slots__ = ("_in_rate", "_out_rate", "_stream")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        """Create a resampler from ``in_rate`` Hz to ``out_rate`` Hz (both > 0)."""
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self._in_rate = in_rate
        self._out_rate = out_rate
        self._stream: Any = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=_QUALITY)
        )

    @property
    def in_rate(self) -> int:
        """The input sample rate in Hz."""
        return self._in_rate

    @property
    def out_rate(self) -> int:
        """The output sample rate in Hz."""
        return self._out_rate

    def process(self, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Resample the next chunk of a 1-D ``int16`` stream and return what is ready.

        Raises:
            TypeError: if ``pcm`` is not ``int16``.
        """
        _check_int16(pcm)
        if self._stream is None:
            return pcm
        out: npt.NDArray[np.int16] = self._stream.resample_chunk(pcm)
        return out

    def flush(self) -> npt.NDArray[np.int16]:
        """Return the remaining tail of the stream and reset for a new stream.

        After ``flush`` the resampler starts afresh (no state from the previous
        stream), so it can be reused.
        """
        if self._stream is None:
            return _EMPTY_INT16
        out: npt.NDArray[np.int16] = self._stream.resample_chunk(_EMPTY_INT16, last=True)
        self._stream.clear()
        return out

    def __repr__(self) -> str:
        """Show the conversion, e.g. ``Resampler(8000 -> 16000)``."""
        return f"Resampler({self._in_rate} -> {self._out_rate})"


def resample(pcm: npt.NDArray[np.int16], in_rate: int, out_rate: int) -> npt.NDArray[np.int16]:
    """Resample a whole 1-D ``int16`` buffer in one shot (``soxr``, HQ quality).

    Returns ``pcm`` itself when the rates are equal.

    Raises:
        TypeError: if ``pcm`` is not ``int16``.
    """
    _check_int16(pcm)
    if in_rate == out_rate:
        return pcm
    out: npt.NDArray[np.int16] = soxr.resample(pcm, in_rate, out_rate, quality=_QUALITY)
    return out
