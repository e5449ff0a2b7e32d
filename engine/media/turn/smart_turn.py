"""Smart Turn v3: the probability that a caller's turn is complete, from the sound alone.

:class:`SmartTurnModel` (synchronous, thread-safe) runs pipecat-ai's Smart Turn v3.2 CPU model
(``smart_turn_v3.onnx`` beside this module; see ``SOURCE.md``) with onnxruntime: the caller's
8 kHz audio is resampled to 16 kHz with soxr, cut or left-padded to its last 8 s, turned into
Whisper log-mel features (:mod:`engine.media.turn.features`) and scored; several calls' windows
go through one batched ``run``. onnxruntime releases the GIL while it computes, so the model runs
in worker threads without stalling an event loop: one thread per session run (``intra_op`` 1),
and as many runs at once as the :class:`~engine.media.turn.service.SmartTurnService` allows.

The sans-IO rule that decides *when* to ask and what the answer means is in
:mod:`engine.media.turn.policy`; the trio side that batches requests is
:mod:`engine.media.turn.service`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]
import soxr

from engine.media.turn.features import (
    MODEL_RATE,
    N_FRAMES,
    N_MELS,
    WINDOW_SAMPLES,
    fit_window,
    log_mel,
)

__all__ = ["MODEL_FILE", "MODEL_SHA256", "SmartTurnModel", "model_path", "prepare"]

MODEL_FILE = "smart_turn_v3.onnx"
"""The model's file name inside this package."""
MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
"""sha256 of the vendored smart-turn-v3.2-cpu.onnx (pipecat-ai 1.14.0)."""
INPUT_RATE = 8_000
"""Rate of the audio the engine hands in (Twilio's)."""

Floats32 = npt.NDArray[np.float32]
PCM = npt.NDArray[np.int16]
"""int16 samples (8 kHz unless a rate is given)."""


def model_path() -> Path:
    """Where the vendored ONNX file lies (inside the installed package)."""
    return Path(str(resources.files("engine.media.turn").joinpath(MODEL_FILE)))


def prepare(pcm: PCM, rate: int = INPUT_RATE) -> Floats32:
    """The model's (80, 800) features for int16 ``pcm`` at ``rate`` (its last 8 s are used)."""
    # As pipecat does: keep the last 8 s at the input rate, then resample (HQ) that piece.
    tail = pcm[-(WINDOW_SAMPLES * rate // MODEL_RATE) :]
    if rate == MODEL_RATE or not len(tail):
        return log_mel(fit_window(tail))
    x = tail.astype(np.float32) / np.float32(32768.0)
    return log_mel(fit_window(soxr.resample(x, rate, MODEL_RATE, quality="HQ")))


class SmartTurnModel:
    """The ONNX model, loaded once per process and shared by every call.

    :meth:`probabilities` is thread-safe: onnxruntime sessions allow concurrent ``run`` s. Each
    ``run`` uses ``intra_op_threads`` threads (1 by default: parallelism comes from running
    several batches at once, each in its own worker thread).
    """

    def __init__(self, path: Path | str | None = None, *, intra_op_threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path) if path is not None else model_path()
        self._session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._lock = threading.Lock()
        self.runs = 0
        """Batched inferences run so far."""
        self.windows = 0
        """Windows scored so far (the sum of the batch sizes)."""

    def score(self, features: Floats32) -> list[float]:
        """Probabilities for a (batch, 80, 800) stack of features."""
        if features.ndim != 3 or features.shape[1:] != (N_MELS, N_FRAMES):
            raise ValueError(f"expected (batch, {N_MELS}, {N_FRAMES}), got {features.shape}")
        (out,) = self._session.run(None, {self._input: features})
        with self._lock:
            self.runs += 1
            self.windows += len(features)
        return [float(p) for p in np.asarray(out, dtype=np.float64).reshape(-1)]

    def probabilities(self, windows: Sequence[PCM], rate: int = INPUT_RATE) -> list[float]:
        """P(turn complete) for each int16 window at ``rate`` (its last 8 s), in one run."""
        if not windows:
            return []
        return self.score(np.stack([prepare(w, rate) for w in windows]))

    def probability(self, pcm: PCM, rate: int = INPUT_RATE) -> float:
        """P(turn complete) for one window."""
        return self.probabilities([pcm], rate)[0]
