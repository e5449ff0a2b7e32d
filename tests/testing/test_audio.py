"""Reading caller audio from files."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from engine.errors import EngineError
from engine.media.codec import resample, ulaw_decode, ulaw_encode
from engine.testing import read_audio
from engine.tts import synthesize


def write_wav(path: Path, pcm: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())


def test_raw_ulaw_is_read_as_is(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10
    (tmp_path / "call.ulaw").write_bytes(data)
    assert read_audio(tmp_path / "call.ulaw") == data


def test_an_8k_wav_is_encoded_exactly(tmp_path: Path) -> None:
    pcm = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
    write_wav(tmp_path / "a.wav", pcm, 8000)
    assert read_audio(tmp_path / "a.wav") == ulaw_encode(pcm)


def test_a_speech_wav_at_22k_stereo_is_resampled_and_mixed(tmp_path: Path) -> None:
    pcm, rate = synthesize("Testing one two three.")
    stereo = np.repeat(pcm, 2)
    write_wav(tmp_path / "s.wav", stereo, rate, channels=2)
    ulaw = read_audio(tmp_path / "s.wav")
    expected = ulaw_decode(ulaw_encode(resample(pcm, rate, 8000))).astype(float)
    got = ulaw_decode(ulaw).astype(float)
    assert abs(len(got) - len(pcm) * 8000 / rate) <= 2
    n = min(len(got), len(expected))
    assert np.corrcoef(got[:n], expected[:n])[0, 1] > 0.99


def test_8_bit_wav(tmp_path: Path) -> None:
    pcm = (np.arange(800) % 200 + 28).astype(np.uint8)
    write_wav(tmp_path / "b.wav", pcm, 8000, width=1)
    got = ulaw_decode(read_audio(tmp_path / "b.wav"))
    assert np.array_equal(np.sign(got), np.sign(pcm.astype(int) - 128))


def test_not_a_wav_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.wav").write_bytes(b"not a wav at all")
    with pytest.raises(EngineError, match="not a PCM WAV"):
        read_audio(tmp_path / "x.wav")
