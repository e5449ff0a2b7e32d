"""The capacity search: echo calls at growing N until a bound is met, and which bound it was.

One sweep serves the engine's own bench and any target (:class:`bench.procs.Endpoint`). Each
step is :func:`bench.scenarios.frame_round_trip`; the sweep stops early when going on would
measure nothing new:

- the **generator** fell behind (its send lateness or CPU share over its limit): from there on
  the figures are the generator's, not the target's;
- **admission** refused calls: the server took what its ceiling allows and answered the rest
  busy — more calls would only be refused too (``voice-engine bench --raw`` turns admission off
  to find where the engine itself breaks);
- the target is **far past its knee** (p99 over a second, or half the calls or frames gone).

:func:`capacity_bound` then says what bounded the capacity: latency, loss, failed calls, the
admission ceiling, the generator, or nothing within the sweep.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.procs import Endpoint, GeneratorError
from bench.scenarios import LATE_MS, RttStep, capacity, frame_round_trip

__all__ = ["Bound", "capacity_bound", "step_line", "stop_reason", "sweep"]

FAR_P99_MS = 1000.0
"""A step whose p99 exceeds this is far past the knee: the sweep stops."""


@dataclass(frozen=True)
class Bound:
    """What ended the capacity search."""

    kind: str
    """``latency`` (p99 ≥ 20 ms), ``loss`` (frames lost or altered), ``failures`` (calls
    failed), ``admission`` (calls refused at the server's ceiling), ``generator`` (the load
    generator fell behind), ``sweep`` (every swept N met the goal) or ``none`` (nothing ran)."""
    at_calls: int | None
    """The N of the step that met the bound."""
    detail: str
    """One sentence for the report."""
    ceiling: int | None = None
    """The server's admission ceiling, when the bound is admission and the server says it."""

    def as_dict(self) -> dict[str, Any]:
        """As plain data for JSON."""
        return asdict(self)


def _why_unhealthy(step: RttStep) -> Bound:
    n = step.calls
    if step.refused_calls:
        ceiling = step.ceiling
        where = f"its ceiling of {ceiling} calls" if ceiling else "its limit"
        verdict = "met" if step.admitted_healthy else "did not meet"
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(step.refusals.items()))
        return Bound(
            "admission",
            n,
            f"at {n} calls the server admitted {step.admitted_calls} and refused "
            f"{step.refused_calls} ({reasons}) at {where}; the admitted calls {verdict} the "
            f"goal (p99 {step.p99_ms:.1f} ms, {step.lost} frames lost)",
            ceiling,
        )
    if step.failed_calls:
        first = step.errors[0] if step.errors else "no error recorded"
        return Bound("failures", n, f"at {n} calls {step.failed_calls} calls failed: {first}")
    if step.lost or step.mismatched:
        return Bound(
            "loss",
            n,
            f"at {n} calls {step.lost} frames were lost and {step.mismatched} came back altered",
        )
    return Bound(
        "latency",
        n,
        f"at {n} calls the frame round trip's p99 was {step.p99_ms:.1f} ms (goal < "
        f"{LATE_MS:.0f} ms)",
    )


def capacity_bound(steps: Sequence[RttStep]) -> Bound:
    """What bounded :func:`bench.scenarios.capacity`: the first step above it that did not
    carry its calls whole — or whose generator was late — or ``sweep`` if none did."""
    if not steps:
        return Bound("none", None, "no step ran")
    best = capacity(list(steps)) or 0
    for step in steps:
        if step.calls <= best:
            continue
        if not step.trustworthy:
            return Bound(
                "generator",
                step.calls,
                f"the load generator fell behind at {step.calls} calls ("
                + "; ".join(step.generator_late_reasons or ["late"])
                + "): the target may carry more, this machine cannot tell",
            )
        if not step.healthy:
            return _why_unhealthy(step)
    top = max(step.calls for step in steps)
    return Bound("sweep", top, f"every swept N up to {top} met the goal: sweep further")


def stop_reason(step: RttStep) -> str | None:
    """Why the sweep should stop after ``step``, or ``None`` to go on."""
    if step.generator_late:
        return "generator late"
    if step.refused_calls:
        return "admission refused calls"
    if step.p99_ms > FAR_P99_MS or step.failed_calls > step.calls // 2:
        return "far past the knee"
    if step.frames_sent and step.lost > step.frames_sent // 2:
        return "far past the knee"
    return None


def _ms(value: float | None, unit: str = "ms", digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f} {unit}".rstrip()


def step_line(step: RttStep) -> str:
    """One line per step for the terminal: latency, loss, admission, the server's cost and
    the generator's own lateness and CPU."""
    refused = f", {step.refused_calls} refused" if step.refused_calls else ""
    ceiling = f" (ceiling {step.ceiling})" if step.ceiling and step.refused_calls else ""
    late = " ⚠ generator late" if step.generator_late else ""
    return (
        f"{step.calls:4d} calls: p50 {step.p50_ms:.2f} ms, p99 {step.p99_ms:.2f} ms, "
        f"{step.lost} lost, {step.failed_calls} failed{refused}{ceiling} | server "
        f"{_ms(step.server_cpu_us_per_frame, 'µs/frame', 0)}, "
        f"{_ms(step.server_cpu_s_per_call_minute, 'CPU s/call-min', 2)} | generator late p99 "
        f"{_ms(step.generator_lateness_p99_ms)}, CPU {step.generator_cpu_percent:.0f} %{late}"
    )


def sweep(
    endpoint: Endpoint,
    counts: Sequence[int],
    duration: float,
    *,
    generator_cpu: int | None,
    audio: Path,
    progress: Callable[[str], None] | None = None,
    errors: list[str] | None = None,
) -> list[RttStep]:
    """Run the steps of ``counts`` in order until :func:`stop_reason` says stop.

    A generator that fails outright (not a call: those are counted) ends the sweep, its error
    appended to ``errors``.
    """
    steps: list[RttStep] = []
    for n in counts:
        if progress:
            progress(f"echo round trip, {n} calls")
        try:
            step = frame_round_trip(endpoint, n, duration, generator_cpu=generator_cpu, audio=audio)
        except GeneratorError as exc:
            if errors is not None:
                errors.append(f"{n} calls: {exc}")
            break
        steps.append(step)
        print("\n  " + step_line(step), file=sys.stderr, flush=True)
        if stop_reason(step):
            break
    return steps
