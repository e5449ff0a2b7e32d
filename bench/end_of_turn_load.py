"""End-of-turn benchmark, continued: decision throughput under load, and noise barge-ins.

- :func:`load`: ``calls`` simulated calls each ask the shared, batched
  :class:`~engine.media.turn.service.ScoringService` (as a live server runs it: the cores but
  one as worker threads, first come first served, refusing at once what it could not answer
  within ``timeout_s``) for a decision every ``ask_every_s`` on average (exponential gaps), on
  2–8 s windows of real speech, each with a ``timeout_s`` deadline (a refused or late question
  is a turn that falls back to the VAD rule). Reports decision latency p50/p99, decisions per
  second per core, batch sizes, refusals and timeouts.
- :func:`barge_in`: the start-of-speech rule (what sends ``clear`` over the bot) replayed on
  babble, street and fan noise at the speech's active level (:mod:`bench.material`) — every
  start there is a false barge-in — and on the turn onsets of real and synthetic speech
  (onset → start, in media time), and on the same real turns spoken over babble and street
  noise 10 dB below the speech (a caller barging in from a noisy place; the noise runs 5 s
  before the turn so the detector has learnt it). Variants: the engine's VAD start rule with
  40 (default), 80, 120 and 200 ms of voiced audio needed, with a start 18 and 20 dB (instead
  of 15) over the noise floor, and the default rule confirmed by Silero VAD (ONNX from the
  silero-vad wheel: pass its path as ``silero``).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]
import trio

from bench.material import NOISES, TRUTH_THRESHOLD, active_level, frame_rms, speech_level
from bench.turn_material import Speech, decode
from bench.turn_taking import percentile
from engine.media.codec import ulaw_decode
from engine.media.frames import PCM, SpeechStarted
from engine.media.turn.service import (
    ScoringModel,
    ServiceSaturated,
    default_threads,
    open_scoring_service,
)
from engine.media.vad import TurnConfig, TurnDetector

__all__ = ["SILERO", "barge_in", "load", "silero_probabilities"]

SILERO = Path("/tmp/silero/silero_vad/data/silero_vad.onnx")
"""Where ``python -m bench.end_of_turn`` looks for silero-vad 6.2.3's ``silero_vad.onnx``
(``pip download silero-vad --no-deps`` and unzip); its rows are left out if it is not there."""
NOISY_CALLER_SNR_DB = 10.0
"""How far above the noise a caller barging in from a noisy place speaks."""
_NOISE_LEAD_MS = 5000


async def _load(
    model: ScoringModel,
    calls: int,
    seconds: float,
    threads: int,
    ask_every_s: float,
    timeout_s: float,
    pcm: PCM,
    max_batch: int,
    bounded: bool,
) -> dict[str, object]:
    rng = np.random.default_rng(0)
    latencies: list[float] = []
    timeouts = refused = 0
    deadline = trio.current_time() + seconds
    window_s = None
    if bounded:  # as a server does: time the model first
        window = pcm[: 8 * 8000]
        model.probabilities([window])
        started = time.perf_counter()
        model.probabilities([window])
        window_s = time.perf_counter() - started

    async with open_scoring_service(
        model,
        threads=threads,
        max_batch=max_batch,
        newest_first=not bounded,
        max_wait_s=timeout_s if bounded else None,
        window_s=window_s,
    ) as service:

        async def call(seed: int) -> None:
            nonlocal timeouts, refused
            own = np.random.default_rng(seed)
            await trio.sleep(float(own.uniform(0, ask_every_s)))
            while trio.current_time() < deadline:
                length = int(own.integers(2, 9)) * 8000
                at = int(own.integers(0, len(pcm) - length))
                started = time.perf_counter()
                answered = False
                with trio.move_on_after(timeout_s) as scope:
                    try:
                        await service.probability(pcm[at : at + length])
                        answered = True
                    except ServiceSaturated:
                        refused += 1
                if answered:
                    latencies.append((time.perf_counter() - started) * 1000)
                elif scope.cancelled_caught:
                    timeouts += 1
                await trio.sleep(float(own.exponential(ask_every_s)))

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for k in range(calls):
                nursery.start_soon(call, int(rng.integers(1 << 30)) + k)
        elapsed = time.perf_counter() - started
        stats = service.statistics()
    asked = len(latencies) + timeouts + refused
    return {
        "calls": calls,
        "threads": threads,
        "max_batch": max_batch,
        "bounded": bounded,
        "seconds": round(elapsed, 1),
        "scored_per_s": round(stats.scored / elapsed, 1),
        "asked_per_s": round(asked / elapsed, 1),
        "decided_per_s": round(len(latencies) / elapsed, 1),
        "decided_per_s_per_core": round(len(latencies) / elapsed / threads, 1),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p99_ms": percentile(latencies, 99),
        "refused": refused,
        "timeouts": timeouts,
        "fallback_share": round((timeouts + refused) / asked, 3) if asked else None,
        "batches": stats.batches,
        "mean_batch": round(stats.scored / stats.batches, 2) if stats.batches else None,
        "largest_batch": stats.largest_batch,
        "abandoned": stats.abandoned,
    }


def load(
    model: ScoringModel,
    calls: int,
    *,
    seconds: float = 15.0,
    threads: int | None = None,
    ask_every_s: float = 2.0,
    timeout_s: float = 0.8,
    max_batch: int = 1,
    bounded: bool = True,
    speech: Speech | None = None,
) -> dict[str, object]:
    """Decision latency and throughput at ``calls`` concurrent calls (see the module doc);
    ``bounded=False`` is phase 1's service (newest first, no refusals, only timeouts)."""
    from bench.turn_material import real_speech

    pcm = np.concatenate([decode(s) for s in ([speech] if speech else real_speech())])
    threads = threads or default_threads()
    return trio.run(
        _load, model, calls, seconds, threads, ask_every_s, timeout_s, pcm, max_batch, bounded
    )


def silero_probabilities(pcm: PCM, path: Path = SILERO) -> np.ndarray:
    """Silero VAD's speech probability for every 32 ms chunk of 8 kHz ``pcm``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options)
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, 32), dtype=np.float32)
    sr = np.array(8000, dtype=np.int64)
    x = pcm.astype(np.float32) / 32768.0
    out = np.zeros(len(x) // 256)
    for k in range(len(out)):
        chunk = np.concatenate((context, x[np.newaxis, k * 256 : (k + 1) * 256]), axis=1)
        prob, state = session.run(None, {"input": chunk, "state": state, "sr": sr})
        context = chunk[:, -32:]
        out[k] = float(prob[0, 0])
    return out


def _starts(pcm: PCM, config: TurnConfig) -> list[int]:
    """Media times (ms, end of the deciding frame) of every speech start."""
    detector = TurnDetector(config)
    times = []
    for i in range(0, len(pcm) - 159, 160):
        for event in detector.process(pcm[i : i + 160], i // 8):
            if isinstance(event, SpeechStarted):
                times.append(i // 8 + 20)
    return times


def _confirm(starts: list[int], silero: np.ndarray | None, threshold: float) -> list[int]:
    """Starts confirmed by Silero within 1 s (at the end of its first chunk ≥ threshold): the
    VAD may start on a breath ~200 ms before the word that Silero then hears."""
    if silero is None:
        return starts
    confirmed = []
    for t in starts:
        first = max(0, t // 32 - 2)  # the chunks that overlap the last ~64 ms
        for k in range(first, min(len(silero), t // 32 + 31)):
            if silero[k] >= threshold:
                confirmed.append(max(t, (k + 1) * 32))
                break
    return confirmed


def _onsets(speech: Speech, pcm: PCM, starts: list[int]) -> list[float]:
    """Onset → start for each turn. The onset is the first frame 10 dB above the background
    (the median of the 500 ms before) from 300 ms before the first word on (a breath or lip
    noise before the word is its onset); starts before the background window are ignored."""
    rms = frame_rms(pcm)
    out = []
    for first_word, end in speech.material.sentences:
        search = max(0, first_word - 300) // 20
        floor = float(np.median(rms[max(0, search - 25) : search])) if search else 0.0
        loud = np.nonzero(rms[search : end // 20] > max(TRUTH_THRESHOLD, 3.16 * floor))[0]
        onset = 20 * (search + int(loud[0])) if len(loud) else first_word
        hits = [t for t in starts if onset - 500 <= t <= end]
        if hits:
            out.append(float(hits[0] - onset))
    return out


def _over_noise(pcm: PCM, noise: PCM) -> PCM:
    """``pcm`` with ``noise`` mixed in ``NOISY_CALLER_SNR_DB`` below its active level, the noise
    starting ``_NOISE_LEAD_MS`` before it (repeated if it is shorter than that)."""
    lead = _NOISE_LEAD_MS * 8
    gain = 10 ** (-NOISY_CALLER_SNR_DB / 20) * active_level(pcm) / (active_level(noise) or 1.0)
    mixed = np.resize(noise, lead + len(pcm)).astype(np.float64) * gain
    mixed[lead:] += pcm
    return np.clip(mixed, -32768, 32767).astype(np.int16)


def barge_in(
    materials: dict[str, list[Speech]], *, seconds: float = 60.0, silero: Path | None = None
) -> list[dict[str, object]]:
    """False barge-ins per minute on noise, and onset → barge-in on speech (clean, and over
    babble and street noise), per variant; ``silero``: the ONNX file for the Silero rows."""
    level = speech_level(b"".join(s.material.ulaw for s in materials["real"]))
    noises = {name: ulaw_decode(make(seconds, level, seed=1)) for name, make in NOISES.items()}
    base = TurnConfig()
    variants: list[tuple[str, TurnConfig, float | None]] = [
        (f"vad start {ms} ms", replace(base, start_ms=ms, start_window_ms=max(100, ms + 60)), None)
        for ms in (40, 80, 120, 200)
    ]
    variants += [
        (f"vad 40 ms, {db} dB over floor", replace(base, snr_db=db), None) for db in (18, 20)
    ]
    if silero is not None:
        variants += [(f"vad 40 ms + silero≥{p}", base, p) for p in (0.5, 0.8)]
    cache: dict[int, np.ndarray] = {}

    def starts(pcm: PCM, config: TurnConfig, threshold: float | None) -> list[int]:
        found = _starts(pcm, config)
        if threshold is None:
            return found
        if id(pcm) not in cache:
            assert silero is not None
            cache[id(pcm)] = silero_probabilities(pcm, silero)
        return _confirm(found, cache[id(pcm)], threshold)

    decoded = {label: [(s, decode(s)) for s in speeches] for label, speeches in materials.items()}
    noisy = {
        name: [(s, _over_noise(pcm, noises[name])) for s, pcm in decoded["real"]]
        for name in ("babble", "street")
    }
    rows: list[dict[str, object]] = []
    for name, config, threshold in variants:
        row: dict[str, object] = {"variant": name}
        for noise, pcm in noises.items():
            found = starts(pcm, config, threshold)
            row[f"{noise}_per_min"] = round(len(found) / (len(pcm) / 8000 / 60), 1)
        for label, pairs in decoded.items():
            onsets: list[float] = []
            turns = 0
            for speech, pcm in pairs:
                onsets += _onsets(speech, pcm, starts(pcm, config, threshold))
                turns += len(speech.material.sentences)
            row[f"{label}_onset_p50_ms"] = percentile(onsets, 50)
            row[f"{label}_onset_max_ms"] = max(onsets) if onsets else math.nan
            row[f"{label}_missed"] = turns - len(onsets)
        for name, pairs in noisy.items():
            onsets = []
            lead = _NOISE_LEAD_MS
            for speech, pcm in pairs:
                found = [t - lead for t in starts(pcm, config, threshold) if t > lead]
                onsets += _onsets(speech, pcm[lead * 8 :], found)
            row[f"over_{name}_onset_p50_ms"] = percentile(onsets, 50)
            row[f"over_{name}_onset_max_ms"] = max(onsets) if onsets else math.nan
        rows.append(row)
    return rows
