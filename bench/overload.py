"""Overload: with the server's call ceiling at K, K + E callers arrive at once.

Admission control should serve the K within the latency goal (p99 frame round trip < 20 ms,
no frame lost) and refuse the E with busy TwiML, and ``/metrics`` should count both. The load
generator is the same as the round-trip sweep's; refused calls are told apart from failed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.engine_metrics import counters, scrape
from bench.procs import run_generator, start_server

__all__ = ["Overload", "overload"]

LATE_MS = 20.0


@dataclass
class Overload:
    """The outcome of one overload run."""

    ceiling: int
    offered: int
    admitted: int
    """Calls that streamed (the generator's view)."""
    refused: int
    """Calls answered with refusal TwiML (the generator's view)."""
    failed_calls: int
    frames_sent: int
    lost: int
    mismatched: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    metrics_admitted: float
    """``voice_engine_calls_admitted_total`` as the server counted it."""
    metrics_refused: float
    """``voice_engine_calls_refused_total`` (all reasons) as the server counted it."""

    @property
    def healthy(self) -> bool:
        """The admitted calls met the goal and exactly the excess was refused."""
        return (
            self.p99_ms < LATE_MS
            and self.lost == 0
            and self.mismatched == 0
            and self.failed_calls == 0
            and self.admitted == self.ceiling
            and self.refused == self.offered - self.ceiling
        )


def overload(
    ceiling: int,
    excess: int,
    duration: float,
    *,
    cpu: int | None,
    generator_cpu: int | None,
    media_listener: bool,
    log: Path,
    audio: Path,
) -> Overload:
    """Start an ``echo`` server with ``--max-calls ceiling``, offer ``ceiling + excess`` calls."""
    server = start_server(
        "echo",
        cpu=cpu,
        media_listener=media_listener,
        log=log,
        extra=("--max-calls", str(ceiling)),
    )
    try:
        offered = ceiling + excess
        result = run_generator(server, offered, duration, cpu=generator_cpu, audio=audio)
        totals = counters(scrape(server.url))
    finally:
        server.stop()
    rtt = np.asarray(result["rtt_ms"], dtype=float)
    if not len(rtt):
        rtt = np.asarray([float("nan")])
    refused = int(result["refused_calls"])  # type: ignore[call-overload]
    failed = int(result["failed_calls"])  # type: ignore[call-overload]
    return Overload(
        ceiling=ceiling,
        offered=offered,
        admitted=offered - refused - failed,
        refused=refused,
        failed_calls=failed,
        frames_sent=int(result["frames_sent"]),  # type: ignore[call-overload]
        lost=int(result["lost"]),  # type: ignore[call-overload]
        mismatched=int(result["mismatched"]),  # type: ignore[call-overload]
        p50_ms=float(np.percentile(rtt, 50)),
        p99_ms=float(np.percentile(rtt, 99)),
        max_ms=float(rtt.max()),
        metrics_admitted=totals.get("voice_engine_calls_admitted_total", 0.0),
        metrics_refused=totals.get("voice_engine_calls_refused_total", 0.0),
    )
