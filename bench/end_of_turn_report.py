"""The end-of-turn part of a benchmark report (issue #12): tables, a plot, headline figures.

``result["end_of_turn"]`` as ``voice-engine bench`` (:mod:`bench.cli`) makes it:

- ``quality``: the VAD rule at several hangovers and Smart Turn side by side on real recordings
  and on eSpeak speech (:func:`bench.end_of_turn.analyzer_rows`): premature ends per internal
  pause, real end of speech → decision p50 / p99;
- ``decisions``: the scoring service at 50 and 200 concurrent calls
  (:func:`bench.end_of_turn.decision_load_rows`): decisions per second per core, decision
  latency, the share of questions that fell back to the VAD rule;
- ``barge_in_noise``: false barge-ins per minute on noise at speaking level, and speech onset →
  barge-in, per start rule (:func:`bench.end_of_turn_load.barge_in`);
- ``live`` (``--full``): VAD and Smart Turn on a live server with many talking calls
  (:func:`bench.end_of_turn.live_analyzer_rows`), with the media loop's echo round trip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.report_sections import ms

__all__ = ["GOALS", "figures", "markdown", "plot"]

GOALS = {"premature_per_pause": 0.05, "latency_p50_ms": 400, "false_barge_ins_per_min": 1.0}
"""Issue #12's goals: premature ends per pause, real end → reply p50, noise barge-ins."""

NOISES = ("babble", "street", "fan")


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def markdown(eot: dict[str, Any]) -> list[str]:
    """The end-of-turn section of ``results.md``."""
    lines = [
        "",
        "## End of turn: VAD and Smart Turn (replayed in media time)",
        "",
        "Premature = a decision inside a sentence, per internal pause; latency = the real end of "
        "speech (last aligned word) → the decision. Real: recorded long sentences "
        "(`tests/data/speech/`); eSpeak: generated sentences with pauses. Goals: ≤ "
        f"{GOALS['premature_per_pause']:.0%} premature per pause, p50 ≤ "
        f"{GOALS['latency_p50_ms']} ms.",
        "",
        "| turn ends by | material | pauses | premature | per pause | missed ends | "
        "latency p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in eot.get("quality", []):
        lines.append(
            f"| {row['config']} | {row['material']} | {row['pauses']} | {row['premature']} | "
            f"{_share(row['premature_per_pause'])} | {row['missed']} | "
            f"{ms(row['latency_p50_ms'], 0)} | {ms(row['latency_p99_ms'], 0)} |"
        )
    decisions = eot.get("decisions") or []
    if decisions:
        lines += [
            "",
            "Smart Turn under load (the scoring service as a server runs it, a question every "
            "~2 s per talking call, 2–8 s windows, refused at once past 0.8 s):",
            "",
            "| talking calls | threads | decisions / s / core | decision p50 ms | p99 ms | "
            "fell back to the VAD rule |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in decisions:
            lines.append(
                f"| {row['calls']} | {row['threads']} | {row['decided_per_s_per_core']} | "
                f"{ms(row['latency_p50_ms'], 0)} | {ms(row['latency_p99_ms'], 0)} | "
                f"{_share(row['fallback_share'])} |"
            )
    noise = eot.get("barge_in_noise") or []
    if noise:
        lines += [
            "",
            "Barge-in (the start rule that sends `clear`) on noise at speaking level, and on "
            f"speech onsets (goal ≤ {GOALS['false_barge_ins_per_min']:.0f} per minute with the "
            "onset → start ≤ 40 ms); onsets of the real turns also spoken 10 dB over babble and "
            "over street noise (a caller barging in from a noisy place):",
            "",
            "| start rule | babble / min | street / min | fan / min | onset p50 / max ms: real | "
            "eSpeak | real over babble | real over street |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in noise:
            onsets = [
                f"{ms(row.get(f'{k}_onset_p50_ms'), 0)} / {ms(row.get(f'{k}_onset_max_ms'), 0)}"
                for k in ("real", "synthetic", "over_babble", "over_street")
            ]
            lines.append(
                f"| {row['variant']} | "
                + " | ".join(str(row.get(f"{n}_per_min", "–")) for n in NOISES)
                + " | "
                + " | ".join(onsets)
                + " |"
            )
    live = eot.get("live") or []
    if live:
        lines += [
            "",
            "Live (a server with talking calls reading the real recordings, and 4 echo calls "
            "measuring the media loop):",
            "",
            "| turn | talking calls | per pause | latency p50 / p99 ms | by model / max silence "
            "/ fallback / unsure | echo round trip p50 / p99 ms | loop lag ms | server CPU |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in live:
            lines.append(
                f"| {row['turn']} | {row['calls']} | {_share(row['premature_per_pause'])} | "
                f"{ms(row['latency_p50_ms'], 0)} / {ms(row['latency_p99_ms'], 0)} | "
                f"{row['by_model']} / {row['by_max_silence']} / {row['by_fallback']} / "
                f"{row.get('by_unsure', 0)} | "
                f"{row['echo_rtt_p50_ms']} / {row['echo_rtt_p99_ms']} | {row['loop_lag_ms']} | "
                f"{row['server_cpu_share']:.0%} |"
            )
    return lines


def figures(eot: dict[str, Any]) -> dict[str, float]:
    """Headline numbers, by name, for ``--compare``."""
    out: dict[str, float] = {}
    for row in eot.get("quality", []):
        key = f"end_of_turn[{row['config']}, {row['material']}]"
        if row["premature_per_pause"] is not None:
            out[f"{key}.premature_per_pause"] = row["premature_per_pause"]
        if row["latency_p50_ms"] is not None:
            out[f"{key}.latency_p50_ms"] = row["latency_p50_ms"]
    for row in eot.get("decisions") or []:
        out[f"end_of_turn.decisions[{row['calls']}].per_s_per_core"] = row["decided_per_s_per_core"]
    for row in eot.get("barge_in_noise") or []:
        for n in NOISES:
            if f"{n}_per_min" in row:
                out[f"end_of_turn.barge_in[{row['variant']}].{n}_per_min"] = row[f"{n}_per_min"]
    return out


def plot(eot: dict[str, Any], folder: Path) -> Path | None:
    """``end_of_turn.png``: premature share against latency per configuration (left), noise
    barge-ins per start rule (right); ``None`` without the data."""
    quality = eot.get("quality") or []
    if not quality:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    left.axvspan(0, GOALS["premature_per_pause"] * 100, color="tab:green", alpha=0.08)
    left.axhline(GOALS["latency_p50_ms"], color="grey", linestyle=":")
    colours: dict[str, str] = {}
    for row in quality:
        if row["premature_per_pause"] is None or row["latency_p50_ms"] is None:
            continue
        colour = colours.setdefault(row["config"], f"C{len(colours) % 10}")
        x, p50 = row["premature_per_pause"] * 100, row["latency_p50_ms"]
        p99 = row["latency_p99_ms"] or p50
        real = row["material"] == "real"
        left.errorbar(
            x,
            p50,
            yerr=[[0], [max(0.0, p99 - p50)]],
            fmt="o" if real else "s",
            color=colour,
            mfc=colour if real else "white",
            capsize=3,
            label=row["config"] if real else None,
        )
    left.set_xlabel("premature ends of turn per internal pause (%)")
    left.set_ylabel("real end of speech → decision, p50 (bar to p99), ms")
    left.set_title("End of turn: filled = real recordings, hollow = eSpeak")
    left.legend(fontsize=7, loc="upper right")

    noise = eot.get("barge_in_noise") or []
    if noise:
        width = 0.8 / len(NOISES)
        for k, name in enumerate(NOISES):
            right.bar(
                [i + k * width for i in range(len(noise))],
                [row.get(f"{name}_per_min", 0.0) for row in noise],
                width,
                label=name,
            )
        right.set_xticks([i + width for i in range(len(noise))])
        right.set_xticklabels(
            [f"{r['variant']}\nonset p50 {ms(r.get('real_onset_p50_ms'), 0)} ms" for r in noise],
            fontsize=7,
            rotation=20,
            ha="right",
        )
        right.axhline(GOALS["false_barge_ins_per_min"], color="grey", linestyle=":")
        right.set_ylabel("false barge-ins per minute")
        right.set_title("Barge-in on noise at speaking level")
        right.legend()
    else:
        right.set_axis_off()
    path = folder / "end_of_turn.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
