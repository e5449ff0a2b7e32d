"""A burst: N callers arrive at once at the default server (admission control on, its ceiling
measured at start-up).

The webhooks come as fast as the generator can send them, at most ``webhook_concurrency`` in
flight (``bench.loadgen --burst --webhook-concurrency 64``). Admission should take what its
ceiling allows and answer the rest busy (``<Reject reason="busy"/>``) — never fail a call — and
the admitted calls should keep their audio whole for their whole life (p99 / p99.9 frame round
trip, lost frames). ``/metrics`` counts both sides: admitted, refused by reason, the ceiling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.engine_metrics import read_server
from bench.procs import run_generator, start_server
from bench.scenarios import LATE_MS

__all__ = ["BURST_CALLS", "WEBHOOK_CONCURRENCY", "Burst", "burst"]

BURST_CALLS = 300
"""Callers in the burst, by default."""
WEBHOOK_CONCURRENCY = 64
"""Webhooks in flight at once, at most."""


@dataclass
class Burst:
    """The outcome of one burst."""

    offered: int
    admitted: int
    """Calls that streamed to the end without an error (the generator's view)."""
    refused: int
    """Calls answered with refusal TwiML (the generator's view)."""
    refusals: dict[str, int]
    """Refusals by the TwiML's reason (``reject:busy``, …)."""
    failed: int
    """Calls that neither streamed whole nor were refused: must be 0."""
    errors: list[str]
    frames_sent: int
    lost: int
    mismatched: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    ceiling: int | None
    """The server's admission ceiling (``voice_engine_call_ceiling``) after the burst."""
    metrics_admitted: float | None
    """``voice_engine_calls_admitted_total`` as the server counted it."""
    metrics_refused: dict[str, float] = field(default_factory=dict)
    """``voice_engine_calls_refused_total`` by reason, as the server counted it."""
    webhook_concurrency: int = WEBHOOK_CONCURRENCY
    server_args: list[str] = field(default_factory=list)
    generator_lateness_p99_ms: float | None = None
    generator_cpu_percent: float = 0.0
    generator_late: bool = False
    """The generator fell behind (a burst of setups is its hardest moment): round trips are
    still timed by the kernel's receive stamps, but the offered load was late."""
    generator_late_reasons: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """No call failed, the admitted calls met the goal for their whole life, and the
        server's counts agree with the generator's."""
        return (
            self.failed == 0
            and self.admitted > 0
            and self.p99_ms < LATE_MS
            and self.lost == 0
            and self.mismatched == 0
            and self.metrics_admitted == self.admitted
            and sum(self.metrics_refused.values()) == self.refused
        )


def burst(
    calls: int,
    duration: float,
    *,
    cpu: int | None,
    generator_cpu: int | None,
    log: Path,
    audio: Path,
    webhook_concurrency: int = WEBHOOK_CONCURRENCY,
    extra: Sequence[str] = (),
) -> Burst:
    """Start the default ``echo`` server (plus ``extra`` ``serve`` arguments, for tests), send
    ``calls`` callers at once, each streaming ``duration`` seconds if admitted."""
    server = start_server("echo", cpu=cpu, log=log, extra=extra)
    try:
        result = run_generator(
            server,
            calls,
            duration,
            cpu=generator_cpu,
            audio=audio,
            burst=True,
            webhook_concurrency=webhook_concurrency,
        )
        view = read_server(server.url)
    finally:
        server.stop()
    rtt = np.asarray(result["rtt_ms"], dtype=float)
    if not len(rtt):
        rtt = np.asarray([float("nan")])
    p50, p99, p999 = (float(v) for v in np.percentile(rtt, [50, 99, 99.9]))
    return Burst(
        offered=calls,
        admitted=int(result["admitted_calls"]),
        refused=int(result["refused_calls"]),
        refusals=dict(result["refusals"]),
        failed=int(result["failed_calls"]),
        errors=list(result["errors"]),
        frames_sent=int(result["frames_sent"]),
        lost=int(result["lost"]),
        mismatched=int(result["mismatched"]),
        p50_ms=p50,
        p99_ms=p99,
        p999_ms=p999,
        max_ms=float(rtt.max()),
        ceiling=view.ceiling if view else None,
        metrics_admitted=view.admitted if view else None,
        metrics_refused=dict(view.refused) if view else {},
        webhook_concurrency=webhook_concurrency,
        server_args=list(extra),
        generator_lateness_p99_ms=result["send_lateness_p99_ms"],
        generator_cpu_percent=100 * float(result["steady_cpu_share"] or result["cpu_share"]),
        generator_late=bool(result["generator_late"]),
        generator_late_reasons=list(result["generator_late_reasons"]),
    )
