"""``voice-engine bench``: run the scenarios, write the report folder, optionally compare.

Three ways in:

- ``voice-engine bench`` — the engine's own bench on its default server (``serve --pipeline
  echo``, no tuning flags: the default is the product): the capacity sweep, a burst of callers
  at once, turn latency and barge-in on real speech, turn-taking quality, end of turn (the VAD
  rule beside Smart Turn, :mod:`bench.end_of_turn`). ``--raw`` turns
  admission off (``--max-calls unlimited``) to find where the engine itself breaks.
- ``voice-engine bench --target URL [--target URL …]`` — other servers (or ``engine``),
  measured the same way and reported side by side (:mod:`bench.targets`).
- ``voice-engine bench --compare A.json B.json …`` — saved results side by side, no run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.about import machine, versions
from bench.agent import AGENT_CALLS
from bench.burst import BURST_CALLS, WEBHOOK_CONCURRENCY, burst
from bench.compare import load_results, write_comparison
from bench.end_of_turn import analyzer_rows, decision_load_rows
from bench.end_of_turn_live import live_load
from bench.end_of_turn_load import barge_in as barge_in_noise
from bench.procs import start_server, usable_cpus
from bench.report import compare, write_markdown, write_plots
from bench.scenarios import as_dict, barge_in, frame_round_trip, turn_latency
from bench.target_options import TargetSpec, add_target_options, targets_from
from bench.targets import RunPlan, measure_echo, measured, run_target
from bench.turn_material import real_speech, synthetic_speech
from bench.turn_taking import live, run_replay
from engine.media.call import SessionConfig
from engine.media.vad import TurnConfig
from engine.tts import speak_ulaw

__all__ = ["add_bench_command", "run_bench"]

QUICK_SWEEP = (1, 10, 50)
FULL_SWEEP = (1, 10, 50, 100, 150, 200, 250, 300, 350, 400, 450, 500)
"""Up to 500 calls: the sweep stops where a bound is met (the generator falls behind, the
admission ceiling refuses calls, or the server is far past its knee)."""
TURN_TAKING_HANGOVERS = (200, 300, 400, 500, 600)
"""Hangovers the turn-taking material is replayed at (the live calls use default and 300)."""
SENTENCES = (
    "I would like to book a table for two people tomorrow evening.",
    "Could you tell me how much the ticket costs?",
    "My flight lands in Chicago at half past six.",
    "Please call me back tomorrow morning at nine.",
    "Is there parking available near the main entrance?",
)
LIVE_TURN_CALLS = (10, 50)
"""Talking calls of the live end-of-turn runs (``--full``), each with the VAD and Smart Turn."""
END_OF_TURN_STEPS = 3
NOT_MEASURED = 3
"""Exit status when a target could not be measured at all (its report says why)."""


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(n) for n in text.split(",") if n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated call counts, not {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("call counts are whole numbers of at least 1")
    return counts


def add_bench_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to the CLI."""
    bench = commands.add_parser(
        "bench",
        help="measure round trip, capacity and turn latency (of this engine or any server)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--full", action="store_true", help="the full sweep (several minutes)")
    bench.add_argument("--calls", type=_counts, help="the sweep's call counts, e.g. 1,10,50")
    bench.add_argument("--duration", type=float, help="seconds per sweep step")
    bench.add_argument("--out", type=Path, default=Path("bench-results"), help="report folder")
    bench.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        metavar="RESULTS",
        help="saved results.json (or comparison.json) files: with two or more and no --target, "
        "only compare them side by side; otherwise compare the new run with them",
    )
    bench.add_argument(
        "--raw",
        action="store_true",
        help="start the engine's server with admission off (--max-calls unlimited): where the "
        "engine itself breaks, not where its ceiling refuses calls",
    )
    bench.add_argument("--no-turns", action="store_true", help="skip turn latency and barge-in")
    bench.add_argument(
        "--burst",
        type=int,
        metavar="N",
        default=BURST_CALLS,
        help=f"callers arriving at once at the default server (webhooks at most "
        f"{WEBHOOK_CONCURRENCY} in flight; default %(default)s; 0 skips)",
    )
    bench.add_argument(
        "--agent-calls",
        type=_counts,
        default=AGENT_CALLS,
        metavar="N,N",
        help="concurrent calls a voice-agent target is measured at (default 1,10,50)",
    )
    bench.add_argument(
        "--turns",
        type=int,
        help="sentences each call says to a voice-agent target (default 3, 6 with --full)",
    )
    bench.add_argument(
        "--setup-timeout",
        type=float,
        metavar="S",
        help="a webhook answer or stream handshake later than this fails the call (default 10)",
    )
    add_target_options(bench)


class _Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()

    def step(self, label: str) -> None:
        width = 30
        filled = int(width * min(self.done, self.total) / max(1, self.total))
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


def _config(args: argparse.Namespace) -> dict[str, Any]:
    cpus = usable_cpus()
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "sweep": list(args.calls or (FULL_SWEEP if args.full else QUICK_SWEEP)),
        "duration_s": args.duration or (20.0 if args.full else 5.0),
        "server_cpu": cpus[0],
        "generator_cpu": cpus[1] if len(cpus) > 1 else None,
        "full": bool(args.full),
        "raw": bool(args.raw),
    }


def _speech(out: Path) -> Path:
    audio = out / "caller.ulaw"
    audio.write_bytes(b"".join(speak_ulaw(s) for s in SENTENCES))
    return audio


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark as configured by ``args``; return the exit code."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    targets = targets_from(args)
    saved = list(args.compare or [])
    if not targets and len(saved) >= 2:
        made = write_comparison(load_results(saved), out)
        print((out / "comparison.md").read_text())
        print("written: " + ", ".join(map(str, made)))
        return 0
    if targets:
        return _run_targets(args, targets, saved)
    return _run_engine(args, saved)


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "target"


def _run_targets(args: argparse.Namespace, targets: list[TargetSpec], saved: list[Path]) -> int:
    out: Path = args.out
    config = _config(args)
    config["agent_calls"] = list(args.agent_calls)
    config["turns"] = args.turns or (6 if args.full else 3)
    plan = RunPlan(
        counts=config["sweep"],
        duration=config["duration_s"],
        agent_calls=args.agent_calls,
        turns=config["turns"],
        audio=_speech(out),
        folder=out,
        server_cpu=config["server_cpu"],
        generator_cpu=config["generator_cpu"],
        raw=bool(args.raw),
        progress=lambda label: print(f"\n{label}", file=sys.stderr, flush=True),
        setup_timeout=args.setup_timeout,
    )
    results = []
    for spec in targets:
        result = run_target(spec, plan)
        result |= {"config": config, "machine": machine(), "versions": versions()}
        folder = out / _slug(spec.label)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps(result, indent=1))
        write_markdown(result, folder / "results.md")
        write_plots(result, folder)
        results.append(result)
    made = write_comparison(results + load_results(saved), out)
    print((out / "comparison.md").read_text())
    print("written: " + ", ".join(map(str, made)) + " and a folder per target")
    broken = [r["target"]["label"] for r in results if not measured(r)]
    if broken:
        print(f"not measured (no call got through): {', '.join(broken)}", file=sys.stderr)
        return NOT_MEASURED
    return 0


def _run_engine(args: argparse.Namespace, saved: list[Path]) -> int:
    """The engine's own bench on its default server."""
    out: Path = args.out
    config = _config(args)
    sweep, duration = config["sweep"], config["duration_s"]
    server_cpu, generator_cpu = config["server_cpu"], config["generator_cpu"]
    log = out / "server.log"
    turns = not args.no_turns
    progress = _Progress(
        (1 if args.burst else 0)
        + len(sweep)
        + (4 + END_OF_TURN_STEPS if turns else 0)
        + (1 if args.full else 0)
        + (2 + len(LIVE_TURN_CALLS) * 2 if turns and args.full else 0)
    )
    audio = _speech(out)
    extra = ["--max-calls", "unlimited"] if args.raw else []
    config |= {"server_args": ["--pipeline", "echo", *extra], "burst_calls": args.burst}
    result: dict[str, Any] = {
        "config": config,
        "machine": machine(),
        "versions": versions(),
        "target": {"label": "voice-engine", "url": "engine", "kind": "engine", "pids": []},
        "mode": "echo",
    }
    server = start_server("echo", cpu=server_cpu, log=log, extra=extra)
    plan = RunPlan(
        counts=sweep,
        duration=duration,
        agent_calls=(),
        turns=0,
        audio=audio,
        folder=out,
        server_cpu=server_cpu,
        generator_cpu=generator_cpu,
        raw=bool(args.raw),
        progress=progress.step,
    )
    try:
        result |= measure_echo(server.endpoint, plan)
        if args.full:
            progress.step("long run, RSS over time")
            series: list[tuple[float, int]] = []
            long_calls = min(50, max(sweep))
            frame_round_trip(
                server,
                long_calls,
                120,
                generator_cpu=generator_cpu,
                audio=audio,
                rss_series=series,
            )
            result["rss_series"] = series
            result["long_run_calls"] = long_calls
    finally:
        server.stop()
    if args.burst:
        progress.step(f"burst, {args.burst} callers at once")
        run = burst(
            args.burst, duration, cpu=server_cpu, generator_cpu=generator_cpu, log=log, audio=audio
        )
        result["burst"] = {**asdict(run), "healthy": run.healthy}
    if turns:
        _turns(result, args, progress, server_cpu=server_cpu, generator_cpu=generator_cpu, log=log)
    progress.close()

    (out / "results.json").write_text(json.dumps(result, indent=1))
    write_markdown(result, out / "results.md")
    plots = write_plots(result, out)
    print((out / "results.md").read_text())
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, " + ", ".join(map(str, plots)))
    if saved:
        earlier = load_results(saved)
        if len(earlier) == 1 and earlier[0].get("frame_round_trip"):
            print("\ncompared with", saved[0])
            print("\n".join(compare(result, earlier[0])))
        made = write_comparison([result, *earlier], out)
        print("side by side: " + ", ".join(map(str, made)))
    return 0


def _turns(
    result: dict[str, Any],
    args: argparse.Namespace,
    progress: _Progress,
    *,
    server_cpu: int,
    generator_cpu: int,
    log: Path,
) -> None:
    clips = [speak_ulaw(s) for s in SENTENCES]
    said = clips if args.full else clips[:3]
    for key, rule in (("turn_latency", None), ("turn_latency_vad", "vad")):
        server = start_server("turn-echo", cpu=server_cpu, log=log, turn=rule)
        try:
            progress.step(f"turn latency, {rule or 'the default'} end of turn")
            result[key] = as_dict(turn_latency(server, said, TurnConfig().hangover_ms))
            result[key]["turn"] = rule or SessionConfig().turn_taking
            if rule is None:
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
                "bench.probe:create", cpu=server_cpu, log=log, hangover_ms=hangover, turn="vad"
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
    result["end_of_turn"] = _end_of_turn(args, progress, server_cpu, generator_cpu)


def _end_of_turn(
    args: argparse.Namespace, progress: _Progress, server_cpu: int, generator_cpu: int
) -> dict[str, Any]:
    """The end-of-turn rows (issue #12): VAD against Smart Turn on real speech, decisions under
    load, barge-in on noise; with ``--full`` also live, on a server with talking calls."""
    progress.step("end of turn: VAD and Smart Turn, replayed")
    quality = analyzer_rows()
    progress.step("end of turn: decisions at 50 and 200 calls")
    decisions = decision_load_rows((50, 200), seconds=15.0 if args.full else 5.0)
    progress.step("end of turn: barge-in on noise")
    noise = barge_in_noise({"real": real_speech(), "synthetic": [synthetic_speech()]}, seconds=180)
    out: dict[str, Any] = {"quality": quality, "decisions": decisions, "barge_in_noise": noise}
    if args.full:
        out["live"] = []
        for calls in LIVE_TURN_CALLS:
            for turn in ("vad", "smart-turn"):
                progress.step(f"end of turn live: {turn}, {calls} talking calls")
                out["live"] += [
                    live_load(turn, calls, server_cpu=server_cpu, generator_cpu=generator_cpu)
                ]
    return out
