"""Tests for engine.media.codec: G.711 μ-law against an independent reference, resampling."""

from __future__ import annotations

import base64

import numpy as np
import numpy.typing as npt
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine.media.codec import (
    FRAME_BYTES,
    SAMPLE_RATE,
    SILENCE_BYTE,
    Resampler,
    resample,
    ulaw_decode,
    ulaw_encode,
)

# --------------------------------------------------------------------------------------
# Independent reference implementation of PROTOCOL.md §7 (16-bit sox routine).
# --------------------------------------------------------------------------------------

CLIP = 32635
BIAS = 0x84

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def ref_encode(s: int) -> int:
    """Encode one 16-bit sample with the textbook 16-bit routine."""
    sign = 0x80 if s < 0 else 0
    m = min(abs(int(s)), CLIP) + BIAS
    exp = m.bit_length() - 8
    mant = (m >> (exp + 3)) & 0x0F
    return ~(sign | exp << 4 | mant) & 0xFF


def ref_decode(u: int) -> int:
    """Decode one μ-law byte with the textbook formula."""
    u = ~u & 0xFF
    sign = u & 0x80
    exp = (u >> 4) & 7
    mant = u & 0x0F
    m = (((mant << 3) + BIAS) << exp) - BIAS
    return -m if sign else m


def ref_step(u: int) -> int:
    """The quantisation step (interval width) of the segment that code ``u`` is in."""
    exp = ((~u & 0xFF) >> 4) & 7
    return 8 << exp


# CPython 3.x audioop's 14-bit path, as described in PROTOCOL.md §7 (explains the mismatches).
_SEG_UEND_14 = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def ref_encode_14bit(s: int) -> int:
    """CPython's ``st_14linear2ulaw``: floor-shift to 14 bits, bias 33, clip 8159."""
    v = int(s) >> 2
    mask = 0x7F if v < 0 else 0xFF
    v = min(abs(v), 8159) + 33
    seg = next((i for i, end in enumerate(_SEG_UEND_14) if v <= end), 8)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((v >> (seg + 1)) & 0x0F)) ^ mask


# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------


def test_constants() -> None:
    assert SILENCE_BYTE == 0xFF
    assert FRAME_BYTES == 160
    assert SAMPLE_RATE == 8000
    assert FRAME_BYTES == SAMPLE_RATE * 20 // 1000


def test_silence_frame() -> None:
    frame = bytes([SILENCE_BYTE]) * FRAME_BYTES
    assert base64.b64encode(frame).decode() == "////" * 53 + "/w=="
    assert not ulaw_decode(frame).any()
    assert ulaw_encode(np.zeros(FRAME_BYTES, dtype=np.int16)) == frame


# --------------------------------------------------------------------------------------
# Decode
# --------------------------------------------------------------------------------------


def test_decode_all_codes_match_reference() -> None:
    out = ulaw_decode(ALL_CODES)
    assert out.dtype == np.int16
    assert out.shape == (256,)
    expected = np.array([ref_decode(u) for u in range(256)], dtype=np.int16)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(("code", "value"), [(0x00, -32124), (0x80, 32124), (0xFF, 0), (0x7F, 0)])
def test_decode_known_values(code: int, value: int) -> None:
    assert int(ulaw_decode(bytes([code]))[0]) == value
    assert ref_decode(code) == value


def test_decode_empty() -> None:
    out = ulaw_decode(b"")
    assert out.dtype == np.int16
    assert out.size == 0


# --------------------------------------------------------------------------------------
# Encode
# --------------------------------------------------------------------------------------


def _encode_all() -> npt.NDArray[np.uint8]:
    return np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8)


def test_encode_all_int16_vs_reference_mismatches_are_the_documented_ones() -> None:
    got = _encode_all()
    ref = np.array([ref_encode(int(s)) for s in ALL_INT16], dtype=np.uint8)
    bad = np.nonzero(got != ref)[0]
    bad_inputs = ALL_INT16[bad].astype(np.int64)

    # Exactly 381 mismatches (65,155 matches), all on negative inputs.
    assert len(bad) == 381
    assert int((got == ref).sum()) == 65_155
    assert (bad_inputs < 0).all()

    # They are runs of three consecutive values (just below each step): 127 runs.
    runs = np.split(bad_inputs, np.nonzero(np.diff(bad_inputs) != 1)[0] + 1)
    assert len(runs) == 127
    assert all(len(r) == 3 for r in runs)
    assert runs[-1].tolist() == [-3, -2, -1]

    # Each mismatching pair of codes is one quantisation step apart: their decoded
    # values are adjacent levels on the same (negative) side.
    neg_levels = sorted({ref_decode(u) for u in range(256) if ref_decode(u) <= 0})
    index = {v: i for i, v in enumerate(neg_levels)}
    for g, r in zip(got[bad].tolist(), ref[bad].tolist(), strict=True):
        assert (g & 0x80) == (r & 0x80) == 0  # both negative-sign codes (inverted bits)
        dg, dr = ref_decode(g), ref_decode(r)
        assert abs(index[dg] - index[dr]) == 1, (hex(g), hex(r), dg, dr)
    # -1..-3 -> 0x7E (audioop) rather than 0x7F (sox)
    assert bytes(got[ALL_INT16 == -1]) == b"\x7e"
    assert bytes(ref[ALL_INT16 == -1]) == b"\x7f"


def test_encode_matches_cpython_14bit_path_exactly() -> None:
    """The documented cause of the mismatches: audioop is the 14-bit routine, byte for byte."""
    got = _encode_all()
    ref14 = np.array([ref_encode_14bit(int(s)) for s in ALL_INT16], dtype=np.uint8)
    np.testing.assert_array_equal(got, ref14)


def test_decode_then_encode_roundtrips_every_code() -> None:
    back = ulaw_encode(ulaw_decode(ALL_CODES))
    for code, b in zip(ALL_CODES, back, strict=True):
        if code == 0x7F:
            assert b in (0x7F, 0xFF)
        else:
            assert b == code, hex(code)


def test_encode_full_range_within_one_step() -> None:
    codes = _encode_all()
    dec = ulaw_decode(codes.tobytes()).astype(np.int64)
    steps = np.array([ref_step(u) for u in range(256)])[codes]
    assert (np.abs(dec - ALL_INT16.astype(np.int64)) <= steps).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint16, np.int8])
def test_encode_rejects_non_int16_arrays(dtype: type[np.generic]) -> None:
    with pytest.raises(TypeError):
        ulaw_encode(np.zeros(160, dtype=dtype))


def test_encode_rejects_float_even_if_integral() -> None:
    with pytest.raises(TypeError):
        ulaw_encode(np.array([0.0, 1000.0, -1000.0]))


def test_encode_bytes_and_array_identical() -> None:
    rng = np.random.default_rng(1234)
    pcm = rng.integers(-32768, 32768, size=4000, dtype=np.int16)
    from_array = ulaw_encode(pcm)
    from_bytes = ulaw_encode(pcm.astype("<i2").tobytes())
    assert isinstance(from_array, bytes)
    assert from_array == from_bytes
    assert len(from_array) == len(pcm)
    # Non-contiguous, big-endian and 2-D int16 arrays encode the same samples.
    assert ulaw_encode(pcm[::2]) == ulaw_encode(pcm[::2].copy())
    assert ulaw_encode(pcm.astype(">i2")) == from_array
    assert ulaw_encode(pcm.reshape(40, 100)) == from_array


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.int16, st.integers(0, 400)))
def test_property_roundtrip_within_one_step(x: npt.NDArray[np.int16]) -> None:
    codes = ulaw_encode(x)
    assert len(codes) == len(x)
    y = ulaw_decode(codes).astype(np.int64)
    steps = np.array([ref_step(u) for u in codes], dtype=np.int64)
    assert (np.abs(y - x.astype(np.int64)) <= steps).all()
    # Encoding is idempotent on decoded values (except -0 which may become +0).
    again = ulaw_encode(ulaw_decode(codes))
    assert bytes(0xFF if c == 0x7F else c for c in again) == bytes(
        0xFF if c == 0x7F else c for c in codes
    )


# --------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------

AMP = 0.5 * 32767  # about -6 dBFS
TONE_HZ = 1000
SECONDS = 3
SKIP = 800  # samples at 8 kHz (100 ms) skipped at each end: filter start-up and tail


def _sine(rate: int, seconds: float = SECONDS, freq: float = TONE_HZ) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(AMP * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _rms(x: npt.NDArray[np.generic]) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def _frames(x: npt.NDArray[np.int16], n: int) -> list[npt.NDArray[np.int16]]:
    return [x[i : i + n] for i in range(0, len(x), n)]


def _stream_roundtrip(sig: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """8k -> 16k -> 8k through two streaming resamplers, 20 ms frames, then flush."""
    up, down = Resampler(8000, 16000), Resampler(16000, 8000)
    out = [down.process(up.process(f)) for f in _frames(sig, FRAME_BYTES)]
    out.append(down.process(up.flush()))
    out.append(down.flush())
    return np.concatenate(out)


def _check_clean_tone(out: npt.NDArray[np.int16], sig: npt.NDArray[np.int16]) -> None:
    """Level within 1 dB, no clicks, and sample-accurate agreement with the input."""
    steady_out = out[SKIP:-SKIP]
    steady_in = sig[SKIP:-SKIP]
    level_db = 20 * np.log10(_rms(steady_out) / _rms(steady_in))
    assert abs(level_db) < 1.0, level_db

    # Max sample-to-sample jump of a clean 1 kHz sine at 8 kHz is at most
    # 2*A*sin(pi*f/fs) (over all phases); a click or dropped sample exceeds it.
    clean_max = 2 * AMP * np.sin(np.pi * TONE_HZ / SAMPLE_RATE)
    jump = float(np.abs(np.diff(steady_out.astype(np.float64))).max())
    assert jump <= 1.1 * clean_max, (jump, clean_max)

    # soxr compensates its delay, so output is time-aligned with input: a boundary
    # artefact anywhere shows up as a large local error (here: within -60 dB of A).
    err = np.abs(steady_out.astype(np.int64) - steady_in.astype(np.int64)).max()
    assert err <= AMP / 1000, err


def test_resampler_roundtrip_8k_16k_8k_clean() -> None:
    sig = _sine(8000)
    out = _stream_roundtrip(sig)
    assert out.dtype == np.int16
    assert len(out) == len(sig)
    _check_clean_tone(out, sig)


def test_streaming_matches_one_shot() -> None:
    sig = _sine(8000)
    streamed = _stream_roundtrip(sig)
    one_shot = resample(resample(sig, 8000, 16000), 16000, 8000)
    n = min(len(streamed), len(one_shot))
    assert abs(len(streamed) - len(one_shot)) <= 2
    a, b = streamed[SKIP : n - SKIP], one_shot[SKIP : n - SKIP]
    corr = float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])
    assert corr > 0.9999, corr
    assert np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= AMP / 1000


def test_naive_per_frame_resampling_fails_the_click_check() -> None:
    """Negative control: stateless per-frame resampling must be caught by the checks."""
    sig = _sine(8000)
    naive = np.concatenate(
        [resample(resample(f, 8000, 16000), 16000, 8000) for f in _frames(sig, FRAME_BYTES)]
    )
    with pytest.raises(AssertionError):
        _check_clean_tone(naive, sig)


def test_resampler_upsample_8k_to_24k_length_and_tone() -> None:
    sig = _sine(8000, seconds=5)
    r = Resampler(8000, 24000)
    assert (r.in_rate, r.out_rate) == (8000, 24000)
    chunks = [r.process(f) for f in _frames(sig, FRAME_BYTES)]
    held_back = len(sig) * 3 - sum(len(c) for c in chunks)
    assert 0 <= held_back < 24000 // 10  # less than 100 ms held back before flush
    chunks.append(r.flush())
    out = np.concatenate(chunks)
    assert out.dtype == np.int16
    assert abs(len(out) - len(sig) * 3) <= 3

    steady = out[3 * SKIP : -3 * SKIP].astype(np.float64)
    assert abs(20 * np.log10(_rms(steady) / _rms(sig[SKIP:-SKIP]))) < 1.0
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
    peak_hz = np.argmax(spectrum) * 24000 / len(steady)
    assert abs(peak_hz - TONE_HZ) < 5
    clean_max = 2 * AMP * np.sin(np.pi * TONE_HZ / 24000)
    assert np.abs(np.diff(steady)).max() <= 1.1 * clean_max


def test_resampler_flush_resets_for_reuse() -> None:
    sig = _sine(8000, seconds=1)
    r = Resampler(8000, 16000)

    def run() -> npt.NDArray[np.int16]:
        return np.concatenate([*(r.process(f) for f in _frames(sig, FRAME_BYTES)), r.flush()])

    first, second = run(), run()
    assert len(first) == len(second) == 2 * len(sig)
    # soxr's int16 output is dithered (random, ±2 LSB), so even two fresh streams are
    # not bit-identical; a leftover state from the first stream would be far larger.
    assert np.abs(first.astype(np.int64) - second.astype(np.int64)).max() <= 4


def test_resampler_passthrough_same_rate() -> None:
    r = Resampler(8000, 8000)
    frame = _sine(8000, seconds=0.02)
    out = r.process(frame)
    np.testing.assert_array_equal(out, frame)
    assert r.flush().size == 0
    assert r.flush().dtype == np.int16
    assert resample(frame, 8000, 8000) is frame


def test_resampler_rejects_bad_input() -> None:
    with pytest.raises(TypeError):
        Resampler(8000, 16000).process(np.zeros(160, dtype=np.float32))
    with pytest.raises(TypeError):
        Resampler(8000, 8000).process(np.zeros(160, dtype=np.float64))
    with pytest.raises(TypeError):
        resample(np.zeros(160, dtype=np.float32), 8000, 16000)
    with pytest.raises(ValueError):
        Resampler(0, 8000)


def test_one_shot_resample_length() -> None:
    sig = _sine(8000, seconds=1)
    assert len(resample(sig, 8000, 16000)) == 16000
    assert len(resample(sig, 8000, 24000)) == 24000
    assert resample(sig, 8000, 16000).dtype == np.int16
    # soxr itself agrees (sanity check that we call it with int16 end to end).
    assert soxr.resample(sig, 8000, 16000).dtype == np.int16
