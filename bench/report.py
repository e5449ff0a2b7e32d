"""Benchmark output: JSON (everything), a Markdown summary, PNG plots, and ``--compare``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import end_of_turn_report
from bench.report_sections import agent, burst, frame_steps, header, pct, rtt_table
from bench.scenarios import PERCENTILES

__all__ = ["compare", "figures", "write_markdown", "write_plots"]


_pct = pct


def figures(result: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of a run, by name (used by the Markdown and by ``--compare``)."""
    out: dict[str, float] = {}
    for step in result.get("frame_round_trip") or []:
        n = step["calls"]
        for key in (
            "p50_ms",
            "p99_ms",
            "server_cpu_percent",
            "rss_per_call_kb",
            "server_cpu_us_per_frame",
        ):
            if step.get(key) is not None:
                out[f"rtt[{n}].{key}"] = step[key]
    if result.get("capacity") is not None:
        out["capacity_calls"] = result["capacity"]
    burst = result.get("burst")
    if burst:
        for key in ("admitted", "refused", "failed", "p99_ms", "p999_ms", "lost"):
            out[f"burst.{key}"] = burst[key]
    for step in (result.get("agent") or {}).get("steps", []):
        for key in ("turn_sent_ms", "turn_heard_ms", "barge_in_ms"):
            value = _pct(step[key], 50)
            if value is not None:
                out[f"agent[{step['calls']}].{key}.p50"] = value
    for name, prefix in (("turn_latency", "turn"), ("turn_latency_vad", "turn_vad")):
        turn = result.get(name)
        if turn:
            for key in ("sent_ms", "heard_ms"):
                for q in (50, 99):
                    value = _pct(turn[key], q)
                    if value is not None:
                        out[f"{prefix}.{key}.p{q}"] = value
    barge = result.get("barge_in")
    if barge and barge["reaction_ms"]:
        out["barge_in.p50_ms"] = _pct(barge["reaction_ms"], 50) or 0.0
    taking = result.get("turn_taking")
    if taking:
        for kind in ("replay", "live"):
            for run in taking[f"{kind}_speech"]:
                share = run["premature"] / run["decisions"] if run["decisions"] else 0.0
                out[f"turn_taking.{kind}.premature_share[{run['hangover_ms']}]"] = share
            for noise in taking[f"{kind}_noise"]:
                out[f"turn_taking.{kind}.false_starts[{noise['noise']}]"] = noise["false_starts"]
                if noise["false_barge_ins"] is not None:
                    out[f"turn_taking.live.false_barge_ins[{noise['noise']}]"] = noise[
                        "false_barge_ins"
                    ]
        for q in (50, 99):
            value = _pct(taking["onset_to_clear_ms"], q)
            if value is not None:
                out[f"turn_taking.onset_to_clear.p{q}"] = value
    out |= end_of_turn_report.figures(result.get("end_of_turn") or {})
    return out


def _turn_taking_markdown(taking: dict[str, Any]) -> list[str]:
    goals = taking["goals"]
    lines = [
        "",
        "## Turn-taking quality",
        "",
        f"Speech with pauses inside sentences ({taking['pause_ms'][0]}–{taking['pause_ms'][1]} ms"
        f", eSpeak NG voices through μ-law, {taking['material_seconds']:.0f} s replayed); noise "
        f"at the speech's level (RMS {taking['speech_level_rms']:.0f}). Replay: the turn detector "
        "fed the material frame by frame; live: calls through the engine over WebSockets "
        "(`bench.probe` stage). A decision is premature when it falls inside a sentence.",
        "",
        "| run | hangover | sentences | decisions | premature | share (goal ≤ "
        f"{goals['premature_share_max']:.0%}) | turn latency p50 | p99 | p99 − hangover "
        f"(goal ≤ {goals['turn_latency_over_hangover_p99_max_ms']} ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("replay", "live"):
        for run in taking[f"{kind}_speech"]:
            share = run["premature"] / run["decisions"] if run["decisions"] else 0.0
            p50, p99 = _pct(run["latency_ms"], 50), _pct(run["latency_ms"], 99)
            over = "–" if p99 is None else f"{p99 - run['hangover_ms']:+.0f} ms"
            lines.append(
                f"| {kind} | {run['hangover_ms']} ms | {run['sentences']} | {run['decisions']} | "
                f"{run['premature']} | {share:.1%} | "
                f"{'–' if p50 is None else f'{p50:.0f} ms'} | "
                f"{'–' if p99 is None else f'{p99:.0f} ms'} | {over} |"
            )
    lines += [
        "",
        f"| noise | run | seconds | false starts | false-turn audio | false barge-ins "
        f"(goal {goals['false_barge_ins']:.0f}) | bot talking |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for kind in ("replay", "live"):
        for noise in taking[f"{kind}_noise"]:
            barge, turn_ms = noise["false_barge_ins"], noise["false_turn_ms"]
            lines.append(
                f"| {noise['noise']} | {kind} | {noise['seconds']:.0f} | {noise['false_starts']} | "
                f"{'–' if turn_ms is None else f'{turn_ms / 1000:.1f} s'} | "
                f"{'–' if barge is None else barge} | "
                f"{noise['barge_in_seconds']:.1f} s |"
            )
    clear = taking["onset_to_clear_ms"]
    detect = taking["onset_detect_ms"]
    if detect:
        lines += [
            "",
            f"Speech declared (replay): true onset → end of the deciding frame p50 "
            f"{_pct(detect, 50):.0f} ms, max {max(detect):.0f} ms (n = {len(detect)}).",
        ]
    if clear:
        lines += [
            f"Barge-in (live): true speech onset → `clear` received p50 {_pct(clear, 50):.0f} ms, "
            f"p99 {_pct(clear, 99):.0f} ms, max {max(clear):.0f} ms (goal ≤ "
            f"{goals['onset_to_clear_max_ms']:.0f} ms; n = {len(clear)}).",
        ]
    return lines


def write_markdown(result: dict[str, Any], path: Path) -> None:
    """A human summary of ``result`` (the engine's own bench, or one target's)."""
    lines = header(result)
    if result.get("frame_round_trip"):
        lines += rtt_table(result)
    lines += frame_steps(result)
    lines += burst(result)
    lines += agent(result)
    errors = result.get("errors") or []
    if errors:
        lines += ["", "## Errors (first few)", ""] + [f"- {e}" for e in errors[:10]]
    for key in ("turn_latency", "turn_latency_vad"):
        turn = result.get(key)
        if not (turn and turn["sent_ms"]):
            continue
        rule = turn.get("turn", "vad")
        how = f"VAD rule, hangover {turn['hangover_ms']} ms" if rule == "vad" else rule
        lines += [
            "",
            f"## Turn latency (turn-echo, eSpeak caller, end of turn: {how})",
            "",
            "End of caller speech → first reply frame sent: "
            f"p50 {_pct(turn['sent_ms'], 50):.0f} ms, "
            f"max {max(turn['sent_ms']):.0f} ms; → first reply audio heard: p50 "
            f"{_pct(turn['heard_ms'], 50):.0f} ms, max {max(turn['heard_ms']):.0f} ms "
            f"(n = {len(turn['sent_ms'])}).",
        ]
    barge = result.get("barge_in")
    if barge and barge["reaction_ms"]:
        r = barge["reaction_ms"]
        lines += [
            "",
            "## Barge-in",
            "",
            f"Caller speech onset → `clear` received: p50 {_pct(r, 50):.0f} ms, "
            f"max {max(r):.0f} ms (n = {len(r)}).",
        ]
    taking = result.get("turn_taking")
    if taking:
        lines += _turn_taking_markdown(taking)
    if result.get("end_of_turn"):
        lines += end_of_turn_report.markdown(result["end_of_turn"])
    lines += ["", f"Versions: {json.dumps(result['versions'])}", ""]
    path.write_text("\n".join(lines))


def write_plots(result: dict[str, Any], folder: Path) -> list[Path]:
    """Latency CDF per N; p99 and server CPU against N; per-step times; RSS over time; end of
    turn (each only when the result holds its data)."""
    made: list[Path] = []
    steps = result.get("frame_round_trip") or []
    if steps:
        made += _rtt_plots(steps, folder)
    made += _step_and_rss_plots(result, folder)
    if result.get("end_of_turn"):
        eot = end_of_turn_report.plot(result["end_of_turn"], folder)
        made += [eot] if eot else []
    return made


def _rtt_plots(steps: list[dict[str, Any]], folder: Path) -> list[Path]:
    made: list[Path] = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in steps:
        ax.plot(s["cdf_ms"], PERCENTILES, label=f"{s['calls']} calls")
    ax.set_xscale("log")
    ax.set_xlabel("frame round trip (ms, log)")
    ax.set_ylabel("percentile")
    ax.set_title("Frame round trip through echo")
    ax.axvline(20, color="grey", linestyle=":")
    ax.legend()
    made.append(folder / "rtt_cdf.png")
    fig.savefig(made[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    calls = [s["calls"] for s in steps]
    ax.plot(calls, [s["p99_ms"] for s in steps], "o-", color="tab:red", label="p99 round trip")
    ax.axhline(20, color="grey", linestyle=":")
    ax.set_xlabel("concurrent calls")
    ax.set_ylabel("p99 round trip (ms)")
    ax.set_yscale("log")
    cpu = [s.get("server_cpu_percent") for s in steps]
    if any(c is not None for c in cpu):
        cpu_ax = ax.twinx()
        cpu_ax.plot(calls, [math.nan if c is None else c for c in cpu], "s--", label="server CPU %")
        cpu_ax.set_ylabel("server CPU (% of one core)")
    ax.set_title("p99 and CPU against load")
    fig.legend(loc="upper left", bbox_to_anchor=(0.12, 0.88))
    made.append(folder / "p99_cpu.png")
    fig.savefig(made[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return made


def _step_and_rss_plots(result: dict[str, Any], folder: Path) -> list[Path]:
    made: list[Path] = []
    frame_steps = result.get("frame_steps") or {}
    if frame_steps:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, h in frame_steps.items():
            bounds = [b if b != float("inf") else h["bounds_us"][-2] * 2 for b in h["bounds_us"]]
            total = sum(h["counts"]) or 1
            ax.step(bounds, [c / total for c in h["counts"]], where="pre", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("time per frame (µs, bucket upper bound, log)")
        ax.set_ylabel("share of sampled frames")
        ax.set_title("Per-step time inside the engine (sampled)")
        ax.legend()
        made.append(folder / "frame_steps.png")
        fig.savefig(made[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)

    series = result.get("rss_series") or []
    if series:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot([t for t, _ in series], [r / 2**20 for _, r in series])
        ax.set_xlabel("seconds into the long run")
        ax.set_ylabel("server RSS (MiB)")
        ax.set_title(f"RSS over a long run ({result.get('long_run_calls')} calls)")
        made.append(folder / "rss.png")
        fig.savefig(made[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    return made


def compare(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """``name: new (old) ×ratio`` for every figure both runs have."""
    a, b = figures(new), figures(old)
    lines = []
    for name in sorted(a.keys() & b.keys()):
        ratio = a[name] / b[name] if b[name] else float("inf")
        lines.append(f"{name:40s} {a[name]:10.2f}  (was {b[name]:.2f})  ×{ratio:.2f}")
    return lines
