"""The measurements: frame round trip at N calls, capacity, turn latency, barge-in reaction.

Round trips come from :mod:`bench.loadgen` in its own process against an echo server — the
engine's ``echo`` pipeline or any Media Streams echo (:class:`bench.procs.Endpoint`); turn
latency and barge-in from a full emulated call (:mod:`engine.testing`) with real speech against
a ``turn-echo`` server, timed on the emulator's own clocks.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio

from bench.engine_metrics import ServerView, read_server
from bench.procs import Endpoint, Server, run_generator, tree_cpu_seconds, tree_rss_bytes
from engine.testing import open_inbound_call, speech_bounds

__all__ = [
    "BargeIn",
    "RttStep",
    "TurnLatency",
    "barge_in",
    "capacity",
    "frame_round_trip",
    "generator_limit",
    "turn_latency",
]

LATE_MS = 20.0
PERCENTILES = [float(p) for p in np.linspace(0, 100, 201)]


@dataclass
class RttStep:
    """Frame round trip through ``echo`` at ``calls`` concurrent calls."""

    calls: int
    duration_s: float
    frames_sent: int
    lost: int
    late: int
    mismatched: int
    failed_calls: int
    refused_calls: int
    """Calls the server refused (admission control): they did not run, so N was not carried."""
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cdf_ms: list[float]
    """Round trip at percentiles 0, 0.5, …, 100."""
    server_cpu_percent: float | None
    """The server's CPU (its processes) over the step, in % of one core; ``None`` when the
    bench does not know its processes (a target without ``--target-pid``)."""
    server_cpu_s_per_call_minute: float | None
    """Server CPU seconds per minute of call streamed (frames sent / 3000)."""
    server_rss_mb: float | None
    rss_per_call_kb: float | None
    server_cpu_us_per_frame: float | None
    """Server CPU per inbound frame (and its echo), setup and teardown included."""
    generator_cpu_percent: float
    """The generator's own CPU share of its core while the most calls streamed."""
    generator_lateness_p99_ms: float | None
    generator_lateness_max_ms: float | None
    generator_late: bool
    """The generator fell behind (lateness p99 or CPU share over its limit): this step
    measured the generator, not the server, and is not trustworthy."""
    generator_late_reasons: list[str]
    peak_calls: int
    """The most calls streaming at once (below ``calls`` when setup outlasts the ramp)."""
    admitted_calls: int = 0
    """Calls that streamed to the end without an error."""
    p90_ms: float = math.nan
    p999_ms: float = math.nan
    refusals: dict[str, int] = field(default_factory=dict)
    """Refusals by the TwiML that refused (``reject:busy``, …), the generator's view."""
    errors: list[str] = field(default_factory=list)
    """The first few failed calls' errors."""
    ceiling: int | None = None
    """The engine's admission ceiling (``voice_engine_call_ceiling``) after the step, when the
    target is a voice-engine server whose ``/metrics`` the bench reads."""
    metrics_refused: dict[str, float] = field(default_factory=dict)
    """Calls the engine's ``/metrics`` counted refused during the step, by reason."""
    steady_p99_ms: float | None = None
    """p99 of the frames sent while every call streamed (no call setting up or ending): the
    whole-life p99 minus what setups cost the calls in flight."""
    steady_p999_ms: float | None = None
    steady_frames: int = 0

    @property
    def admitted_healthy(self) -> bool:
        """The calls that ran met the goal: p99 under 20 ms, every frame back, none failed (the
        refused ones aside)."""
        return (
            self.p99_ms < LATE_MS
            and self.lost == 0
            and self.mismatched == 0
            and self.failed_calls == 0
            and self.admitted_calls > 0
        )

    @property
    def healthy(self) -> bool:
        """p99 under 20 ms, every frame back, every call up (none failed or refused)."""
        return (
            self.p99_ms < LATE_MS
            and self.lost == 0
            and self.mismatched == 0
            and self.failed_calls == 0
            and self.refused_calls == 0
        )

    @property
    def trustworthy(self) -> bool:
        """Whether the generator kept up, so the figures are the server's."""
        return not self.generator_late


class _RssSampler:
    def __init__(self, pids: tuple[int, ...], every: float = 0.25) -> None:
        self.pids, self.every = pids, every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self.every):
            self.samples.append((time.monotonic() - start, tree_rss_bytes(self.pids)))

    def __enter__(self) -> _RssSampler:
        if self.pids:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def frame_round_trip(
    target: Server | Endpoint,
    calls: int,
    duration: float,
    *,
    generator_cpu: int | None,
    audio: Path,
    rss_series: list[tuple[float, int]] | None = None,
    burst: bool = False,
    webhook_concurrency: int | None = None,
) -> RttStep:
    """One step of the sweep: ``calls`` echo calls for ``duration`` seconds.

    The server's CPU and memory are read when its processes are known; its admission ceiling
    and refusals when it is a voice-engine server with a known ``/metrics``.
    Raises :class:`bench.procs.GeneratorError` if the generator itself fails.
    """
    endpoint = target.endpoint if isinstance(target, Server) else target
    pids = endpoint.pids
    rss_before = tree_rss_bytes(pids) if pids else 0
    cpu_before = tree_cpu_seconds(pids) if pids else 0.0
    view_before = read_server(endpoint.metrics_url)
    started = time.monotonic()
    with _RssSampler(pids) as sampler:
        result: dict[str, Any] = run_generator(
            endpoint,
            calls,
            duration,
            cpu=generator_cpu,
            audio=audio,
            burst=burst,
            webhook_concurrency=webhook_concurrency,
        )
    wall = time.monotonic() - started
    view = read_server(endpoint.metrics_url)
    if rss_series is not None:
        rss_series.extend(sampler.samples)
    return step_from_result(
        calls,
        duration,
        result,
        server=_server_use(pids, cpu_before, rss_before, sampler.samples, wall, result),
        view=(view_before, view),
    )


def _server_use(
    pids: tuple[int, ...],
    cpu_before: float,
    rss_before: int,
    samples: list[tuple[float, int]],
    wall: float,
    result: dict[str, Any],
) -> dict[str, float | None]:
    keys = (
        "server_cpu_percent",
        "server_cpu_s_per_call_minute",
        "server_rss_mb",
        "rss_per_call_kb",
        "server_cpu_us_per_frame",
    )
    if not pids:
        return dict.fromkeys(keys)
    server_cpu = tree_cpu_seconds(pids) - cpu_before
    rss_peak = max([rss for _, rss in samples] or [tree_rss_bytes(pids)])
    frames = int(result["frames_sent"])
    admitted = max(1, int(result["admitted_calls"]))
    return {
        "server_cpu_percent": 100 * server_cpu / wall,
        "server_cpu_s_per_call_minute": server_cpu / max(frames / 3000, 1e-9),
        "server_rss_mb": rss_peak / 2**20,
        "rss_per_call_kb": max(0, rss_peak - rss_before) / admitted / 1024,
        "server_cpu_us_per_frame": 1e6 * server_cpu / max(1, frames),
    }


def step_from_result(
    calls: int,
    duration: float,
    result: dict[str, Any],
    *,
    server: dict[str, float | None],
    view: tuple[ServerView | None, ServerView | None] = (None, None),
) -> RttStep:
    """An :class:`RttStep` from the generator's JSON, the server's use and its ``/metrics``
    before and after."""
    rtt = np.asarray(result["rtt_ms"], dtype=float)
    if not len(rtt):
        rtt = np.asarray([float("nan")])
    before, after = view
    refused: dict[str, float] = {}
    if after is not None:
        for reason, count in after.refused.items():
            delta = count - (before.refused.get(reason, 0.0) if before else 0.0)
            if delta:
                refused[reason] = delta
    return RttStep(
        calls=calls,
        duration_s=duration,
        frames_sent=int(result["frames_sent"]),
        lost=int(result["lost"]),
        late=int((rtt > LATE_MS).sum()),
        mismatched=int(result["mismatched"]),
        failed_calls=int(result["failed_calls"]),
        refused_calls=int(result["refused_calls"]),
        p50_ms=float(np.percentile(rtt, 50)),
        p95_ms=float(np.percentile(rtt, 95)),
        p99_ms=float(np.percentile(rtt, 99)),
        max_ms=float(rtt.max()),
        cdf_ms=[round(float(v), 3) for v in np.percentile(rtt, PERCENTILES)],
        generator_cpu_percent=100 * float(result["steady_cpu_share"] or result["cpu_share"]),
        generator_lateness_p99_ms=result["send_lateness_p99_ms"],
        generator_lateness_max_ms=result["send_lateness_max_ms"],
        generator_late=bool(result["generator_late"]),
        generator_late_reasons=list(result["generator_late_reasons"]),
        peak_calls=int(result["peak_streaming"]),
        admitted_calls=int(result["admitted_calls"]),
        p90_ms=float(np.percentile(rtt, 90)),
        p999_ms=float(np.percentile(rtt, 99.9)),
        refusals=dict(result.get("refusals") or {}),
        errors=list(result.get("errors") or []),
        ceiling=after.ceiling if after is not None else None,
        metrics_refused=refused,
        steady_p99_ms=result.get("rtt_steady_p99_ms"),
        steady_p999_ms=result.get("rtt_steady_p999_ms"),
        steady_frames=int(result.get("rtt_steady_frames") or 0),
        server_cpu_percent=server["server_cpu_percent"],
        server_cpu_s_per_call_minute=server["server_cpu_s_per_call_minute"],
        server_rss_mb=server["server_rss_mb"],
        rss_per_call_kb=server["rss_per_call_kb"],
        server_cpu_us_per_frame=server["server_cpu_us_per_frame"],
    )


def capacity(steps: list[RttStep]) -> int | None:
    """The largest swept N whose step is healthy (p99 < 20 ms, nothing lost), among the steps
    before the first one whose generator was late (from there on, the figures are the
    generator's: see :func:`generator_limit`)."""
    healthy = []
    for step in steps:
        if not step.trustworthy:
            break
        if step.healthy:
            healthy.append(step.calls)
    return max(healthy) if healthy else None


def generator_limit(steps: list[RttStep]) -> int | None:
    """The N of the first step whose generator was late, if any: the capacity search stops
    there, and the server's capacity may be higher than :func:`capacity` says."""
    return next((step.calls for step in steps if not step.trustworthy), None)


@dataclass
class TurnLatency:
    """End of caller speech → first reply frame received, and → first reply audio heard (ms)."""

    sent_ms: list[float]
    heard_ms: list[float]
    hangover_ms: int


@dataclass
class BargeIn:
    """Caller speech onset → ``clear`` received (ms), per trial."""

    reaction_ms: list[float]


async def _turns(url: str, token: str, clips: list[bytes]) -> TurnLatency:
    sent: list[float] = []
    heard: list[float] = []
    async with open_inbound_call(url, token) as call:
        record = call.record
        await call.pause(0.4)
        for clip in clips:
            spoke_at = record.frames_sent * 20
            await call.say(clip)
            end = spoke_at + speech_bounds(clip)[1]
            reply_wait = len(clip) / 8000 + 2.0
            await call.pause(reply_wait)
            arrivals = [(t - record.t0) * 1000 for t, _ in record.received]
            first = next((a for a in arrivals if a >= end), None)
            tick = next((i for i in range(end // 20, len(record.played)) if record.played[i]), None)
            if first is not None and tick is not None:
                sent.append(first - end)
                heard.append(tick * 20 - end)
    return TurnLatency(sent, heard, 0)


async def _barge_ins(
    url: str, token: str, long_clip: bytes, short_clip: bytes, trials: int
) -> BargeIn:
    reactions: list[float] = []
    onset_offset = speech_bounds(short_clip)[0]
    for _ in range(trials):
        async with open_inbound_call(url, token) as call:
            record = call.record
            await call.pause(0.3)
            await call.say(long_clip)
            with trio.move_on_after(len(long_clip) / 8000 + 3):
                while sum(record.played) < 25:  # half a second of the reply heard
                    await trio.sleep(0.02)
            clears_before = len(record.clears)
            start = record.frames_sent * 20
            await call.say(short_clip)
            await call.pause(0.5)
            if len(record.clears) > clears_before:
                clear_at = (record.clears[clears_before][0] - record.t0) * 1000
                reactions.append(clear_at - (start + onset_offset))
    return BargeIn(reactions)


def turn_latency(server: Server, clips: list[bytes], hangover_ms: int) -> TurnLatency:
    """Turn latency over ``clips`` spoken in one call to a ``turn-echo`` server."""
    result = trio.run(_turns, server.url, server.auth_token, clips)
    result.hangover_ms = hangover_ms
    return result


def barge_in(server: Server, long_clip: bytes, short_clip: bytes, trials: int) -> BargeIn:
    """Barge-in reaction: speak ``short_clip`` over the echo of ``long_clip``."""
    return trio.run(_barge_ins, server.url, server.auth_token, long_clip, short_clip, trials)


def as_dict(value: Any) -> Any:
    """A dataclass (or list of them) as plain data for JSON."""
    if isinstance(value, list):
        return [as_dict(v) for v in value]
    return asdict(value)


ProgressFn = Callable[[str], None]
