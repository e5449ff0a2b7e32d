"""``voice-engine bench --target``: any Media Streams server, measured the way the engine is.

A target is a voice webhook (``http(s)://…/path``: each call POSTs Twilio's signed form there,
follows the TwiML's ``<Connect><Stream>`` or ``<Start><Stream>`` with its ``<Parameter>``\\ s),
a stream URL (``ws(s)://…``, dialled directly with ``--param`` custom parameters), or
``engine[:PIPELINE]`` — this engine's own default server, started by the bench (our engine is
just one more target); the command line's side is :mod:`bench.target_options`.

What is measured depends on what the target does (:func:`detect`, or ``--mode``): an **echo**
gets the frame round trip and the capacity search (:mod:`bench.sweep`); a **voice agent** gets
turn latency, barge-in and premature replies at 1/10/50 calls (:mod:`bench.agent`). A broken
or hostile target — one that refuses, closes early, sends garbage or never answers — ends as
counted errors in its result, never as a hang or a crash of the bench.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from bench.agent import AgentStep, agent_script, agent_step
from bench.engine_metrics import histograms, missing, read_server, summarize
from bench.procs import Endpoint, GeneratorError, Server, run_generator, start_server
from bench.scenarios import as_dict, capacity, generator_limit
from bench.sweep import capacity_bound, sweep
from bench.target_options import TargetSpec

__all__ = [
    "Detection",
    "RunPlan",
    "detect",
    "measure_agent",
    "measure_echo",
    "measured",
    "run_target",
]

PROBE_S = 2.0
"""Seconds of speech the detection call sends."""
ECHO_P50_MS = 250.0
"""An echo answers each frame: its median round trip is under this."""


@dataclass
class Detection:
    """What one short call showed the target to be."""

    mode: str | None
    """``echo``, ``agent``, or ``None`` when the call did not get through."""
    reason: str
    frames_sent: int = 0
    frames_back: int = 0
    mismatched: int = 0
    p50_ms: float | None = None


def detect(endpoint: Endpoint, *, audio: Path, generator_cpu: int | None) -> Detection:
    """Call once with :data:`PROBE_S` of speech: a target that sends each frame back, unchanged
    and at once, is an echo; one that gets the call through otherwise is a voice agent."""
    try:
        result = run_generator(endpoint, 1, PROBE_S, cpu=generator_cpu, audio=audio)
    except GeneratorError as exc:
        return Detection(None, str(exc))
    if result["failed_calls"]:
        return Detection(None, f"the probe call failed: {result['errors'][0]}")
    if result["refused_calls"]:
        return Detection(None, f"the probe call was refused: {result['call_outcomes'][0]}")
    if result.get("one_way_calls"):
        return Detection(
            None,
            "the TwiML starts a one-way stream (<Start><Stream>): nothing can come back to "
            "measure (answer with <Connect><Stream>)",
        )
    sent, back = int(result["frames_sent"]), int(result["frames_echoed"])
    rtt = result["rtt_ms"]
    p50 = float(np.percentile(rtt, 50)) if rtt else None
    found = Detection("agent", "", sent, back, int(result["mismatched"]), p50)
    echoed = sent and back >= 0.9 * sent and found.mismatched <= 0.1 * back
    if echoed and p50 is not None and p50 < ECHO_P50_MS:
        found.mode = "echo"
        found.reason = f"{back} of {sent} frames came back unchanged, p50 {p50:.1f} ms"
        return found
    found.reason = (
        f"{back} media messages back for {sent} frames sent, {found.mismatched} not the "
        "frame sent at their place: not an echo"
    )
    return found


@dataclass
class RunPlan:
    """How the targets are measured (the same for each, so the figures compare)."""

    counts: Sequence[int]
    duration: float
    agent_calls: Sequence[int]
    turns: int
    audio: Path
    """Speech for the echo calls (and the detection call)."""
    folder: Path
    server_cpu: int | None
    generator_cpu: int | None
    raw: bool = False
    """Start engine targets with admission off (``--max-calls unlimited``)."""
    progress: Callable[[str], None] | None = None
    setup_timeout: float | None = None
    """A webhook answer or handshake later than this (s) fails the call."""


def measure_echo(endpoint: Endpoint, plan: RunPlan) -> dict[str, Any]:
    """The capacity sweep on an echo, its bound, and the engine's own step timings if the
    target is a voice-engine server whose ``/metrics`` the bench reads."""
    errors: list[str] = []
    steps = sweep(
        endpoint,
        plan.counts,
        plan.duration,
        generator_cpu=plan.generator_cpu,
        audio=plan.audio,
        progress=plan.progress,
        errors=errors,
    )
    out: dict[str, Any] = {
        "frame_round_trip": as_dict(steps),
        "capacity": capacity(steps),
        "capacity_bound": capacity_bound(steps).as_dict(),
        "capacity_generator_limit": generator_limit(steps),
        "errors": errors + [e for s in steps for e in s.errors][:10],
    }
    view = read_server(endpoint.metrics_url)
    if view is not None:
        found = summarize(histograms(view.text))
        out["frame_steps"] = found
        out["frame_steps_missing"] = missing(found)
    return out


def measure_agent(endpoint: Endpoint, plan: RunPlan) -> dict[str, Any]:
    """The agent at each of ``plan.agent_calls`` concurrent calls (stopping where the
    generator falls behind)."""
    script = agent_script(plan.turns)
    steps: list[AgentStep] = []
    errors: list[str] = []
    for calls in plan.agent_calls:
        if plan.progress:
            plan.progress(f"agent turns, {calls} calls")
        try:
            step = agent_step(
                endpoint,
                calls,
                script,
                audio=plan.folder / "agent-script.ulaw",
                generator_cpu=plan.generator_cpu,
            )
        except GeneratorError as exc:
            errors.append(f"{calls} calls: {exc}")
            break
        steps.append(step)
        errors += step.errors
        if step.generator_late:
            break
    return {
        "agent": {
            "script": {
                "seconds": script.duration_s,
                "utterances_ms": script.utterances,
                "pauses_ms": script.pauses,
            },
            "steps": [asdict(s) for s in steps],
        },
        "errors": errors[:10],
    }


def _endpoint(spec: TargetSpec, setup_timeout: float | None) -> Endpoint:
    metrics = None
    if spec.kind == "webhook":
        parts = urlsplit(spec.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        metrics = origin if read_server(origin, timeout=2.0) is not None else None
    return Endpoint(
        spec.url,
        spec.auth_token,
        spec.parameters,
        pids=spec.pids,
        metrics_url=metrics,
        ca_file=spec.ca_file,
        insecure_tls=spec.insecure_tls,
        setup_timeout=setup_timeout,
    )


def run_target(spec: TargetSpec, plan: RunPlan) -> dict[str, Any]:
    """Measure one target; its result (the same shape as the engine's own bench's). What goes
    wrong on the target's side is counted in ``errors``; so is a failure of the bench's own
    processes (an engine that does not start, a generator that dies), which ends the target's
    run early."""
    result: dict[str, Any] = {"target": spec.describe(), "errors": [], "mode": None}
    servers: list[Server] = []
    try:
        _measure(spec, plan, result, servers)
    except (RuntimeError, OSError) as exc:
        result["errors"].append(f"{type(exc).__name__}: {exc}")
    finally:
        for server in servers:
            server.stop()
    return result


def _measure(
    spec: TargetSpec, plan: RunPlan, result: dict[str, Any], servers: list[Server]
) -> None:
    if spec.is_engine:
        extra = ["--max-calls", "unlimited"] if plan.raw else []
        servers.append(
            start_server(
                spec.pipeline(), cpu=plan.server_cpu, log=plan.folder / "server.log", extra=extra
            )
        )
        result["target"]["server_args"] = ["--pipeline", spec.pipeline(), *extra]
        endpoint = replace(servers[0].endpoint, setup_timeout=plan.setup_timeout)
    else:
        endpoint = _endpoint(spec, plan.setup_timeout)
    result["target"]["metrics"] = endpoint.metrics_url is not None
    result["target"]["pids"] = list(endpoint.pids)
    mode = spec.mode
    if mode == "auto":
        if plan.progress:
            plan.progress(f"{spec.label}: what is it?")
        found = detect(endpoint, audio=plan.audio, generator_cpu=plan.generator_cpu)
        result["detection"] = asdict(found)
        if found.mode is None:
            result["errors"].append(found.reason)
            print(f"\n  {spec.label}: {found.reason}", file=sys.stderr)
            return
        mode = found.mode
    result["mode"] = mode
    measure = measure_echo if mode == "echo" else measure_agent
    found_ = measure(endpoint, plan)
    result["errors"] += found_.pop("errors")
    result.update(found_)


def measured(result: dict[str, Any]) -> bool:
    """Whether any call of the target got through (else its result holds only errors)."""
    if result.get("mode") == "echo":
        return any(s["admitted_calls"] for s in result.get("frame_round_trip", []))
    if result.get("mode") == "agent":
        steps = result.get("agent", {}).get("steps", [])
        return any(s["calls"] > s["failed_calls"] for s in steps)
    return False
