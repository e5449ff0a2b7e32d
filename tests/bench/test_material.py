"""The turn-taking material: lengths, levels, pauses where the truth says, and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from bench.material import NOISES, frame_rms, paused_speech, speech_level
from engine.media.codec import ulaw_decode


@pytest.fixture(scope="module")
def material():  # type: ignore[no-untyped-def]
    return paused_speech(4, seed=7)


def test_paused_speech_has_its_sentences_and_pauses_where_the_truth_says(material) -> None:  # type: ignore[no-untyped-def]
    assert len(material.sentences) == 4
    assert len(material.pauses) == len(material.inserted_pauses_ms) == 8  # 3 phrases each
    rms = frame_rms(ulaw_decode(material.ulaw))
    assert len(material.ulaw) % 160 == 0 and material.duration_ms == len(rms) * 20
    for start, end in material.sentences:
        assert rms[start // 20] > 300 and rms[end // 20 - 1] > 300  # speech at both edges
        assert rms[start // 20 - 1] <= 300 and rms[end // 20] <= 300  # and not just outside
    for (before, after), drawn in zip(material.pauses, material.inserted_pauses_ms, strict=True):
        assert 160 <= drawn <= 500 and drawn % 20 == 0
        assert after - before == drawn  # measured speech-to-speech, as drawn
        assert (rms[before // 20 : after // 20] <= 300).all()
        assert rms[after // 20] > 300
    # Sentences are apart by at least 1.5 s of silence, so a turn really ends between them.
    for (_, end), (start, _) in zip(material.sentences, material.sentences[1:], strict=False):
        assert start - end >= 1500


def test_paused_speech_is_deterministic_and_the_seed_matters(material) -> None:  # type: ignore[no-untyped-def]
    # eSpeak NG is not bit-exact between syntheses (a clause may differ by ~10 ms), so the
    # same seed gives the same structure and pauses, and nearly the same length.
    again = paused_speech(4, seed=7)
    assert again.inserted_pauses_ms == material.inserted_pauses_ms
    assert [b - a for a, b in again.pauses] == [b - a for a, b in material.pauses]
    assert abs(again.duration_ms - material.duration_ms) <= 200
    other = paused_speech(4, seed=8)
    assert other.inserted_pauses_ms != material.inserted_pauses_ms


@pytest.mark.parametrize("name", sorted(NOISES))
def test_noise_has_its_length_and_the_speech_level_and_is_deterministic(name: str) -> None:
    level = 3000.0
    noise = NOISES[name](3.0, level, seed=1)
    assert len(noise) == 3 * 8000
    pcm = ulaw_decode(noise).astype(np.float64)
    assert np.sqrt(np.mean(pcm**2)) == pytest.approx(level, rel=0.05)  # μ-law rounds a little
    if name != "babble":  # numpy alone: bit-exact (babble is eSpeak's, see the module)
        assert NOISES[name](3.0, level, seed=1) == noise
    assert NOISES[name](3.0, level, seed=2) != noise
    # Noise, not silence with bursts: every 100 ms carries sound.
    rms = frame_rms(pcm)
    assert (rms.reshape(-1, 5).max(axis=1) > level / 10).all()


def test_fan_is_steady_and_street_swells() -> None:
    def spread_db(noise: bytes) -> float:
        rms = frame_rms(ulaw_decode(noise)).reshape(-1, 25).mean(axis=1)  # 0.5 s levels
        return float(20 * np.log10(rms.max() / rms.min()))

    assert spread_db(NOISES["fan"](20.0, 3000.0, seed=1)) < 3
    assert spread_db(NOISES["street"](20.0, 3000.0, seed=1)) > 6


def test_speech_level_is_the_active_level(material) -> None:  # type: ignore[no-untyped-def]
    level = speech_level(material.ulaw)
    assert 1000 < level < 10000
    # Silence around the speech does not dilute it.
    assert speech_level(b"\xff" * 80_000 + material.ulaw) == pytest.approx(level)
    assert speech_level(b"\xff" * 8000) == 0.0
