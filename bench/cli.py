"""``voice-engine bench``: run the scenarios, write the report folder, optionally compare."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench.engine_metrics import histograms, scrape, summarize
from bench.overload import overload
from bench.procs import start_server, usable_cpus
from bench.report import compare, write_markdown, write_plots
from bench.scenarios import (
    as_dict,
    barge_in,
    capacity,
    frame_round_trip,
    generator_limit,
    turn_latency,
)
from bench.turn_taking import live, run_replay
from engine.media.vad import TurnConfig
from engine.tts import speak_ulaw

__all__ = ["add_bench_command", "run_bench"]

QUICK_SWEEP = (1, 10, 50)
OVERLOAD_EXCESS = 20
"""Callers beyond the ceiling in the overload run."""
TURN_TAKING_HANGOVERS = (200, 300, 400, 500, 600)
"""Hangovers the turn-taking material is replayed at (the live calls use default and 300)."""
FULL_SWEEP = (1, 10, 50, 100, 150, 200, 250, 300)
SENTENCES = (
    "I would like to book a table for two people tomorrow evening.",
    "Could you tell me how much the ticket costs?",
    "My flight lands in Chicago at half past six.",
    "Please call me back tomorrow morning at nine.",
    "Is there parking available near the main entrance?",
)


def add_bench_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to the CLI."""
    bench = commands.add_parser("bench", help="measure round trip, capacity and turn latency")
    bench.add_argument("--full", action="store_true", help="the full sweep (several minutes)")
    bench.add_argument("--calls", help="comma-separated sweep, e.g. 1,10,50 (overrides)")
    bench.add_argument("--duration", type=float, help="seconds per sweep step")
    bench.add_argument("--out", type=Path, default=Path("bench-results"), help="report folder")
    bench.add_argument("--compare", type=Path, help="an earlier results.json to compare with")
    bench.add_argument(
        "--media-path",
        choices=("listener", "hypercorn"),
        default="listener",
        help="serve media on the dedicated listener (default) or through hypercorn",
    )
    bench.add_argument("--no-turns", action="store_true", help="skip turn latency and barge-in")
    bench.add_argument(
        "--overload",
        type=int,
        metavar="K",
        help="call ceiling of the overload run (K + 20 callers; default 10, with --full the "
        "measured capacity); 0 skips it",
    )


class _Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()

    def step(self, label: str) -> None:
        width = 30
        filled = int(width * self.done / self.total)
        elapsed = time.monotonic() - self.started
        bar = "#" * filled + "-" * (width - filled)
        print(
            f"\r[{bar}] {self.done}/{self.total} {elapsed:5.0f}s {label:40s}",
            end="",
            file=sys.stderr,
            flush=True,
        )
        self.done += 1

    def close(self) -> None:
        self.done = self.total
        self.step("done")
        print(file=sys.stderr)


def _versions() -> dict[str, str]:
    names = ("voice-engine", "trio", "hypercorn", "wsproto", "numpy", "webrtcvad-wheels", "soxr")
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "?"
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark as configured by ``args``; return the exit code."""
    sweep = (
        tuple(int(n) for n in args.calls.split(","))
        if args.calls
        else (FULL_SWEEP if args.full else QUICK_SWEEP)
    )
    duration = args.duration or (20.0 if args.full else 5.0)
    cpus = usable_cpus()
    server_cpu = cpus[0]
    generator_cpu = cpus[1] if len(cpus) > 1 else None
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "server.log"
    listener = args.media_path == "listener"
    turns = not args.no_turns
    overload_ceiling = args.overload if args.overload is not None else 10
    progress = _Progress(
        (1 if overload_ceiling else 0)
        + len(sweep)
        + (3 if turns else 0)
        + (1 if args.full else 0)
        + (2 if turns and args.full else 0)
    )

    audio_path = out / "caller.ulaw"
    audio_path.write_bytes(b"".join(speak_ulaw(s) for s in SENTENCES))
    result: dict[str, Any] = {
        "config": {
            "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "sweep": list(sweep),
            "duration_s": duration,
            "server_cpu": server_cpu,
            "generator_cpu": generator_cpu,
            "media_path": args.media_path,
            "full": bool(args.full),
        },
        "machine": {"cpu_model": _cpu_model(), "cpus": len(cpus), "platform": platform.platform()},
        "versions": _versions(),
    }
    server = start_server("echo", cpu=server_cpu, media_listener=listener, log=log)
    steps = []
    try:
        for n in sweep:
            progress.step(f"echo round trip, {n} calls")
            steps.append(
                frame_round_trip(server, n, duration, generator_cpu=generator_cpu, audio=audio_path)
            )
            if steps[-1].p99_ms > 1000 or steps[-1].failed_calls > n // 2:
                break  # far past the knee: more calls only take longer to say the same
            if steps[-1].generator_late:
                break  # the generator fell behind: more calls would measure it, not the server
        # The server's own sampled timings of each step of the media path, over the sweep.
        result["frame_steps"] = summarize(histograms(scrape(server.url)))
        if args.full:
            progress.step("long run, RSS over time")
            series: list[tuple[float, int]] = []
            long_calls = min(50, max(sweep))
            frame_round_trip(
                server,
                long_calls,
                120,
                generator_cpu=generator_cpu,
                audio=audio_path,
                rss_series=series,
            )
            result["rss_series"] = series
            result["long_run_calls"] = long_calls
    finally:
        server.stop()
    result["frame_round_trip"] = as_dict(steps)
    result["capacity"] = capacity(steps)
    result["capacity_generator_limit"] = generator_limit(steps)
    if args.full and args.overload is None:
        overload_ceiling = result["capacity"] or 10
    if overload_ceiling:
        progress.step(f"overload, ceiling {overload_ceiling} + {OVERLOAD_EXCESS}")
        run = overload(
            overload_ceiling,
            OVERLOAD_EXCESS,
            duration,
            cpu=server_cpu,
            generator_cpu=generator_cpu,
            media_listener=listener,
            log=log,
            audio=audio_path,
        )
        result["overload"] = {**as_dict(run), "healthy": run.healthy}

    if turns:
        clips = [speak_ulaw(s) for s in SENTENCES]
        server = start_server("turn-echo", cpu=server_cpu, media_listener=listener, log=log)
        try:
            progress.step("turn latency, real speech")
            result["turn_latency"] = as_dict(
                turn_latency(server, clips if args.full else clips[:3], TurnConfig().hangover_ms)
            )
            progress.step("barge-in reaction")
            result["barge_in"] = as_dict(
                barge_in(server, clips[0] + clips[1], clips[2], 5 if args.full else 2)
            )
        finally:
            server.stop()
        turn = TurnConfig()
        taking = run_replay(24, 60.0, turn, TURN_TAKING_HANGOVERS, progress=progress.step)
        if args.full:  # the same through the engine over WebSockets, in real time
            for hangover in sorted({turn.hangover_ms, 300}, reverse=True):
                progress.step(f"turn-taking live, hangover {hangover} ms")
                server = start_server(
                    "bench.probe:create",
                    cpu=server_cpu,
                    media_listener=listener,
                    log=log,
                    hangover_ms=hangover,
                )
                try:
                    first = hangover == turn.hangover_ms
                    live(
                        server,
                        taking,
                        hangover_ms=hangover,
                        sentences=6,
                        noise_listen_s=3.0 if first else 0.0,
                        noise_talk_s=8.0 if first else 0.0,
                        onset_trials=6 if first else 0,
                    )
                finally:
                    server.stop()
        result["turn_taking"] = as_dict(taking)
    progress.close()

    (out / "results.json").write_text(json.dumps(result, indent=1))
    write_markdown(result, out / "results.md")
    plots = write_plots(result, out)
    print((out / "results.md").read_text())
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, " + ", ".join(map(str, plots)))
    if args.compare:
        print("\ncompared with", args.compare)
        print("\n".join(compare(result, json.loads(args.compare.read_text()))))
    return 0
