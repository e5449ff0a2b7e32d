"""Whisper features and Smart Turn scores against values from the reference implementation.

``tests/data/smart_turn_reference.npz`` was computed once, outside the project, with
transformers 5.24's ``WhisperFeatureExtractor(chunk_length=8)`` (and pipecat 1.14.0's own
inference steps: the last 8 s at 8 kHz, soxr HQ to 16 kHz, zero padding at the start) and the
vendored ONNX under onnxruntime: every 40th feature frame, and the probability.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from turn_clips import DATA, clip, upto

from engine.media.turn.features import N_FRAMES, N_MELS, WINDOW_SAMPLES, fit_window, log_mel
from engine.media.turn.smart_turn import MODEL_SHA256, SmartTurnModel, model_path, prepare

REFERENCE = np.load(DATA / "smart_turn_reference.npz")
CLIPS = {
    "austen_0880": lambda: clip("austen_0880"),  # 3 s: padded at the start
    "jfk_cut": lambda: upto("jfk", 4.5),
    "jfk": lambda: clip("jfk"),  # 11 s: truncated to its last 8 s
}


@pytest.fixture(scope="module")
def model() -> SmartTurnModel:
    return SmartTurnModel()


def test_model_file_is_the_vendored_one() -> None:
    assert hashlib.sha256(model_path().read_bytes()).hexdigest() == MODEL_SHA256


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_features_match_the_reference(name: str) -> None:
    features = prepare(CLIPS[name]())
    assert features.shape == (N_MELS, N_FRAMES)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features[:, ::40], REFERENCE[f"{name}_features"], atol=1e-5)


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_probability_agrees_with_the_reference(model: SmartTurnModel, name: str) -> None:
    """The model is int8, and onnxruntime's int8 kernels depend on the CPU (AVX2's u8s8 path
    saturates where AVX-512 VNNI does not; graph fusions change rounding too), so the same
    features score differently from machine to machine: on an AMD EPYC with VNNI, 0.069 / 0.019
    / 0.81 where the reference machine gave 0.145 / 0.010 / 0.50. The features above are ours
    and match exactly; of the probability, what must hold everywhere is the answer: incomplete
    where the reference is clearly so, and the whole sentence not below its undecided 0.5."""
    p = model.probability(CLIPS[name]())
    reference = float(REFERENCE[f"{name}_probability"])
    if reference < 0.4:
        assert p < 0.4
    else:
        assert p >= reference - 0.05


def test_probability_is_deterministic(model: SmartTurnModel) -> None:
    window = CLIPS["jfk"]()
    assert len({model.probability(window) for _ in range(3)}) == 1


def test_batch_equals_one_by_one(model: SmartTurnModel) -> None:
    windows = [CLIPS[name]() for name in sorted(CLIPS)]
    assert model.probabilities(windows) == pytest.approx(
        [model.probability(w) for w in windows], abs=1e-6
    )


def test_window_keeps_the_end_and_pads_the_start() -> None:
    short = np.arange(1, 1001, dtype=np.float32)
    window = fit_window(short)
    assert len(window) == WINDOW_SAMPLES
    assert not window[:-1000].any()
    assert window[-1] == 1000.0
    long = np.arange(WINDOW_SAMPLES + 5, dtype=np.float32)
    assert fit_window(long)[0] == 5.0
    assert fit_window(np.array([16384], dtype=np.int16))[-1] == 0.5


def test_features_are_normalised_like_whisper() -> None:
    features = log_mel(fit_window(clip("austen_0880")))
    # (log10 + 4) / 4 with the range clipped at 8 below the maximum: spread ≤ 2.
    assert features.max() - features.min() <= 2.0 + 1e-6
    silent = log_mel(np.zeros(WINDOW_SAMPLES, dtype=np.float32))
    assert np.allclose(silent, silent[0, 0])
