"""The server's Prometheus metrics, safe across worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set in the environment before this module is first imported
(``voice-engine serve --workers N`` does that for its workers), every process writes its values
to files there and :func:`render` adds them up, so ``GET /metrics`` on any worker shows the
whole server. Without it, values live in this process's default registry.

Per-frame figures are never written per frame: sessions keep plain counters that are folded in
by :class:`CallMeter` (once a second and at the call's end), and per-step timings are sampled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

__all__ = [
    "CALLS_ACTIVE",
    "CALLS_ADMITTED",
    "CALLS_ENDED",
    "CALLS_REFUSED",
    "CALL_CEILING",
    "CONTENT_TYPE",
    "EVENT_LOOP_LAG",
    "FRAMES_DROPPED",
    "FRAMES_IN",
    "FRAMES_OUT",
    "FRAME_ROUND_TRIP",
    "FRAME_STEP",
    "REST_ERRORS",
    "SEQUENCE_ANOMALIES",
    "STAGE_ERRORS",
    "TURN_ANALYSIS",
    "TURN_DECISIONS",
    "TURN_LATENCY",
    "TURN_QUESTIONS",
    "CallCounts",
    "CallMeter",
    "mark_process_dead",
    "multiprocess_dir",
    "render",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :func:`render`'s output."""

_MS = 0.001
_ROUND_TRIP_BUCKETS = tuple(
    x * _MS for x in (0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100, 250)
)
_STEP_BUCKETS = tuple(x * 1e-6 for x in (2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000))
_TURN_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)
_ANALYSIS_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0)

CALLS_ACTIVE = Gauge(
    "voice_engine_calls_active", "Calls with an open media stream.", multiprocess_mode="livesum"
)
CALL_CEILING = Gauge(
    "voice_engine_call_ceiling",
    "Calls this process takes on at once (admission control's ceiling).",
    multiprocess_mode="livesum",
)
CALLS_ADMITTED = Counter(
    "voice_engine_calls_admitted", "Voice webhooks answered with a stream (calls admitted)."
)
CALLS_REFUSED = Counter(
    "voice_engine_calls_refused",
    "Calls refused by admission control (webhook or makeCall), by reason.",
    ["reason"],
)
CALLS_ENDED = Counter("voice_engine_calls_ended", "Media streams ended, by reason.", ["reason"])
STAGE_ERRORS = Counter(
    "voice_engine_stage_errors", "Calls ended by their AI stage failing or hanging.", ["reason"]
)
FRAMES_IN = Counter("voice_engine_frames_in", "Inbound media frames received.")
FRAMES_OUT = Counter("voice_engine_frames_out", "Outbound audio sent, counted in 20 ms frames.")
FRAMES_DROPPED = Counter(
    "voice_engine_frames_dropped", "Inbound frames dropped because a stage fell behind."
)
FRAME_ROUND_TRIP = Histogram(
    "voice_engine_frame_round_trip_seconds",
    "Inside the engine, from an inbound frame read to the reply frame it caused written (sampled).",
    buckets=_ROUND_TRIP_BUCKETS,
)
FRAME_STEP = Histogram(
    "voice_engine_frame_step_seconds",
    "Time per frame of each step of the media path (sampled).",
    ["step"],
    buckets=_STEP_BUCKETS,
)
TURN_LATENCY = Histogram(
    "voice_engine_turn_latency_seconds",
    "End of the caller's speech to the first reply audio sent.",
    buckets=_TURN_BUCKETS,
)
TURN_DECISIONS = Counter(
    "voice_engine_turn_decisions",
    "Ends of the caller's turn decided with an end-of-turn analyzer, by what decided them: model, "
    "max_silence, fallback (the analyzer failed, stalled or was saturated: the VAD rule), "
    "unsure (the VAD rule, after turns in a row ran to max_silence), max_turn.",
    ["outcome"],
)
TURN_QUESTIONS = Counter(
    "voice_engine_turn_questions",
    "Questions to the end-of-turn analyzer, by outcome: answered, saturated (refused at once), "
    "failed, timed_out.",
    ["outcome"],
)
TURN_ANALYSIS = Histogram(
    "voice_engine_turn_analysis_seconds",
    "From an end-of-turn question to its answer (answered questions).",
    buckets=_ANALYSIS_BUCKETS,
)
SEQUENCE_ANOMALIES = Counter(
    "voice_engine_sequence_anomalies",
    "Media Stream sequence numbers skipped, repeated or out of order (the calls went on).",
)
REST_ERRORS = Counter(
    "voice_engine_rest_errors", "Error answers from Twilio's REST API, by code.", ["code", "status"]
)
EVENT_LOOP_LAG = Gauge(
    "voice_engine_event_loop_lag_seconds",
    "How late the event loop ran a timer at its last check.",
    multiprocess_mode="max",
)


def multiprocess_dir() -> str | None:
    """The shared metrics folder when running as one of several workers, else ``None``."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render() -> bytes:
    """Every metric in Prometheus text format, summed over all worker processes."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def mark_process_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (its counters stay in the totals)."""
    if multiprocess_dir() is not None:
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class CallCounts:
    """A call's running frame counters, as its session reports them."""

    frames_in: int
    frames_out: int
    frames_dropped: int


class CallMeter:
    """Folds one call's running counters into the process counters, as deltas."""

    __slots__ = ("_last",)
    _frames_in = 0  # every meter's inbound frames folded so far, in this process

    @classmethod
    def total_frames_in(cls) -> int:
        """Inbound frames folded by every meter of this process so far."""
        return cls._frames_in

    def __init__(self) -> None:
        self._last = CallCounts(0, 0, 0)

    def fold(self, counts: CallCounts) -> None:
        """Add what changed since the previous fold."""
        last = self._last
        if counts.frames_in > last.frames_in:
            FRAMES_IN.inc(counts.frames_in - last.frames_in)
            CallMeter._frames_in += counts.frames_in - last.frames_in
        if counts.frames_out > last.frames_out:
            FRAMES_OUT.inc(counts.frames_out - last.frames_out)
        if counts.frames_dropped > last.frames_dropped:
            FRAMES_DROPPED.inc(counts.frames_dropped - last.frames_dropped)
        self._last = counts
