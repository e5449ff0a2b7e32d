"""Sections of a benchmark report's Markdown: the header, the round-trip table with its bound,
the engine's sampled step times, the burst, a voice agent's turns."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["agent", "burst", "frame_steps", "header", "ms", "pct", "rtt_row", "rtt_table"]


def pct(values: list[float], q: float) -> float | None:
    """Percentile ``q`` of ``values`` (nearest rank), or ``None`` without any."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def header(result: dict[str, Any]) -> list[str]:
    """The title line: when, where, which server or target, and what it was detected to be."""
    config, target = result["config"], result.get("target") or {}
    where = (
        f"server `serve {' '.join(config['server_args'])}`"
        if config.get("server_args")
        else f"target {target.get('label', '?')} ({target.get('url', '?')})"
    )
    lines = [
        f"# voice-engine benchmark{': ' + target['label'] if target.get('label') else ''}",
        "",
        f"{config['when']} · {result['machine']['cpu_model']} · {where} · "
        f"server on CPU {config.get('server_cpu')}, generator on CPU "
        f"{config.get('generator_cpu')}",
    ]
    found = result.get("detection")
    if found:
        lines += ["", f"Detected: **{found['mode'] or 'not measurable'}** — {found['reason']}."]
    return lines


def rtt_table(result: dict[str, Any]) -> list[str]:
    """The round-trip table, one row per step, then the capacity and the bound it met."""
    lines = [
        "",
        "## Frame round trip (echo), per 20 ms frame",
        "",
        "| calls | peak | refused (ceiling) | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | "
        "p99 / p99.9 steady | lost | late >20 ms | server CPU | server µs / frame | "
        "CPU s / call-min | RSS / call | generator CPU | generator lateness p99 / max | "
        "trustworthy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in result["frame_round_trip"]:
        lines.append(rtt_row(s))
    capacity = result.get("capacity")
    limit = result.get("capacity_generator_limit")
    lines += [
        "",
        f"**Capacity** (largest swept N with p99 < 20 ms and no frame lost, measured by a "
        f"generator that kept up): {capacity if capacity is not None else 'none of the swept N'}",
    ]
    bound = result.get("capacity_bound")
    if bound:
        lines += ["", f"**Bound met: {bound['kind']}** — {bound['detail']}."]
    lines += [
        "",
        "Round trips are over each call's whole life; *steady* counts only the frames sent "
        "while every call of the step streamed (none setting up or ending), so the difference "
        "is what call setups cost the calls in flight.",
    ]
    if limit is not None:
        lines += [
            "",
            f"⚠ The load generator fell behind at {limit} calls (send lateness or CPU share over "
            "its limit): that step and any after it measured the generator, not the server, and "
            "the search stopped there — the server may carry more than the capacity above.",
        ]
    return lines


def frame_steps(result: dict[str, Any]) -> list[str]:
    """The engine's sampled per-step times, and which steps are absent and why."""
    if "frame_steps" not in result:
        return []
    found = result["frame_steps"] or {}
    lines = [
        "",
        "## Per-step time inside the engine (server's sampled histograms, over the sweep)",
        "",
    ]
    if found:
        lines += ["| step | samples | mean µs | p50 µs | p99 µs |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {name} | {h['samples']} | {h['mean_us']:.1f} | {h['p50_us']:.1f} | "
            f"{h['p99_us']:.1f} |"
            for name, h in found.items()
        ]
    else:
        lines.append("No step was timed in this run (the engine times one call in 16).")
    lines += [
        "",
        "decode = μ-law decode (only when the turn detector or a stage needs samples); vad = turn "
        "detector; stage = "
        "the stage's own handling; encode = playout building the outbound message; socket = "
        "writing it; round-trip = inbound frame read → its echo written (percentiles "
        "interpolated within histogram buckets). Sampled: one call in 16, one frame in 8.",
    ]
    absent = result.get("frame_steps_missing") or {}
    if absent:
        lines += ["", "Not in this run:"] + [f"- {k}: {why}" for k, why in absent.items()]
    return lines


def burst(result: dict[str, Any]) -> list[str]:
    """The burst: admitted, refused, failed, the admitted calls' round trip, /metrics."""
    b = result.get("burst")
    if not b:
        return []
    reasons = ", ".join(f"{k} {v:.0f}" for k, v in sorted(b["metrics_refused"].items())) or "none"
    refusals = ", ".join(f"{k} {v}" for k, v in sorted(b["refusals"].items())) or "none"
    errors = f" (first: {b['errors'][0]})" if b["errors"] else ""
    metrics_admitted = b["metrics_admitted"]
    lines = [
        "",
        "## Burst (admission control on the default server)",
        "",
        f"{b['offered']} callers at once (webhooks at most {b['webhook_concurrency']} in flight), "
        f"server ceiling {b['ceiling'] if b['ceiling'] is not None else '?'} calls "
        f"(`voice_engine_call_ceiling`):",
        "",
        "| admitted | refused (busy TwiML) | failed | p50 ms | p99 ms | p99.9 ms | max ms | "
        "lost frames | generator lateness p99 | generator CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {b['admitted']} | {b['refused']} | {b['failed']} | {b['p50_ms']:.2f} | "
        f"{b['p99_ms']:.2f} | {b['p999_ms']:.2f} | {b['max_ms']:.1f} | {b['lost']} | "
        f"{ms(b['generator_lateness_p99_ms'])} ms | {b['generator_cpu_percent']:.0f} % |",
        "",
        f"Refusals as the callers heard them: {refusals}{errors}. The server's /metrics "
        f"counted {'?' if metrics_admitted is None else f'{metrics_admitted:.0f}'} admitted and "
        f"refused {reasons}. Round trips are over the admitted calls' whole life. Goal met "
        f"(none failed, the admitted whole, both sides agree): "
        f"{'yes' if b['healthy'] else '**no**'}.",
    ]
    if b.get("generator_late"):
        lines += [
            "",
            "⚠ The load generator fell behind during the burst ("
            + "; ".join(b.get("generator_late_reasons") or ["late"])
            + "): its frames left late, so the load was not offered on time; round trips are "
            "timed from when each frame actually left.",
        ]
    return lines


def agent(result: dict[str, Any]) -> list[str]:
    """A voice agent's turn-taking at each number of concurrent calls."""
    data = result.get("agent")
    if not data:
        return []
    script = data["script"]
    lines = [
        "",
        "## Voice agent: turn-taking",
        "",
        f"Each call says {len(script['utterances_ms'])} sentences of real speech (with "
        f"{len(script['pauses_ms'])} pauses inside them) over {script['seconds']:.0f} s; short "
        "gaps after every second sentence make the next one barge in on the reply.",
        "",
        "| calls | failed | replies / utterances | no reply | turn latency sent p50 / p90 | "
        "heard p50 / p90 | premature replies | barge-ins: → clear p50 / p90, ignored | "
        "generator lateness p99, CPU | target CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in data["steps"]:
        late = " ⚠ late" if s["generator_late"] else ""
        lines.append(
            f"| {s['calls']} | {s['failed_calls']} | {s['replies']} / {s['utterances']} | "
            f"{s['no_reply']} | {ms(pct(s['turn_sent_ms'], 50), 0)} / "
            f"{ms(pct(s['turn_sent_ms'], 90), 0)} ms | {ms(pct(s['turn_heard_ms'], 50), 0)} / "
            f"{ms(pct(s['turn_heard_ms'], 90), 0)} ms | {s['premature']} | "
            f"{ms(pct(s['barge_in_ms'], 50), 0)} / {ms(pct(s['barge_in_ms'], 90), 0)} ms, "
            f"{s['barge_ins_ignored']} of {s['barge_ins']} | "
            f"{ms(s['generator_lateness_p99_ms'])} ms, {s['generator_cpu_percent']:.0f} %{late} | "
            f"{ms(s['server_cpu_percent'], 0)} |"
        )
    lines += [
        "",
        "Turn latency: end of the caller's speech → the first reply sound (sent: its arrival; "
        "heard: when it began to play, after any audio queued before it). Premature: the agent "
        "began talking while the caller was mid-sentence. Barge-in: the caller began speaking "
        "while the agent's audio played; ignored = no `clear` within 1 s while it talked on.",
    ]
    return lines


def ms(value: float | None, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals, or ``–`` for none (or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def rtt_row(s: dict[str, Any]) -> str:
    """One row of the round-trip table (older results lack the newer columns: –)."""
    late = s.get("generator_late")
    trust = (
        "–"
        if late is None
        else "yes"
        if not late
        else "⚠ **no**: " + "; ".join(s.get("generator_late_reasons") or ["generator late"])
    )
    refused = s.get("refused_calls") or 0
    ceiling = s.get("ceiling")
    admission = f"{refused}" + (f" ({ceiling})" if ceiling is not None else "")
    cpu = s.get("server_cpu_percent")
    rss = s.get("rss_per_call_kb")
    return (
        f"| {s['calls']} | {s.get('peak_calls', '–')} | {admission} | {s['p50_ms']:.2f} | "
        f"{ms(s.get('p90_ms'), 2)} | {s['p99_ms']:.2f} | {ms(s.get('p999_ms'), 2)} | "
        f"{s['max_ms']:.1f} | {ms(s.get('steady_p99_ms'), 2)} / "
        f"{ms(s.get('steady_p999_ms'), 2)} | "
        f"{s['lost']} | {s['late']} | "
        f"{'–' if cpu is None else f'{cpu:.0f} %'} | {ms(s.get('server_cpu_us_per_frame'), 0)} | "
        f"{ms(s.get('server_cpu_s_per_call_minute'), 2)} | "
        f"{'–' if rss is None else f'{rss:.0f} KiB'} | "
        f"{s['generator_cpu_percent']:.0f} % | {ms(s['generator_lateness_p99_ms'])} / "
        f"{ms(s.get('generator_lateness_max_ms'))} ms | {trust} |"
    )
