"""Side by side: several targets' results in one report (JSON, Markdown, PNG).

Each result is what ``voice-engine bench`` writes as ``results.json`` — for the engine's own
bench or for a ``--target`` — so a comparison may mix fresh runs and saved ones
(``--compare``). The report carries the machine, the versions and the load generator's own
lateness and CPU beside every figure, so a reader can trust or reject them.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.about import machine, versions
from bench.scenarios import PERCENTILES

__all__ = ["comparison", "load_results", "write_comparison"]


def load_results(paths: list[Path]) -> list[dict[str, Any]]:
    """Results from saved files: a ``results.json`` each, or a ``comparison.json`` (its
    targets)."""
    out: list[dict[str, Any]] = []
    for path in paths:
        data = json.loads(path.read_text())
        if "targets" in data and isinstance(data["targets"], list):
            out += data["targets"]
        else:
            data.setdefault("target", {"label": path.parent.name or path.stem, "kind": "saved"})
            out.append(data)
    return out


def comparison(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The comparison's JSON: where it was assembled, and every target's result."""
    labels: dict[str, int] = {}
    for result in results:  # labels must tell the columns apart
        label = result.setdefault("target", {}).get("label", "target")
        labels[label] = labels.get(label, 0) + 1
        if labels[label] > 1:
            result["target"]["label"] = f"{label} #{labels[label]}"
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "versions": versions(),
        "targets": results,
    }


def _f(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}{unit}"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _trusted(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for step in steps:
        if step.get("generator_late"):
            break
        out.append(step)
    return out


def _worst(steps: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in steps if s.get(key) is not None]
    return max(values) if values else None


def _echo_rows(targets: list[dict[str, Any]]) -> list[str]:
    head = "| | " + " | ".join(t["target"]["label"] for t in targets) + " |"
    lines = [head, "|---|" + "---:|" * len(targets)]

    def row(name: str, cells: list[str]) -> None:
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    row("what it is", [_detected(t) for t in targets])
    first = [t["frame_round_trip"][0] if t["frame_round_trip"] else None for t in targets]
    for key, name in (
        ("p50_ms", "p50"),
        ("p90_ms", "p90"),
        ("p99_ms", "p99"),
        ("p999_ms", "p99.9"),
    ):
        row(
            f"round trip {name}, {first[0]['calls'] if first[0] else 1} call(s)",
            [_f(s.get(key), 2, " ms") if s else "–" for s in first],
        )
    row("lost frames, first step", [str(s["lost"]) if s else "–" for s in first])
    top = [(_trusted(t["frame_round_trip"]) or [{}])[-1] for t in targets]
    row(
        "largest trusted step: calls, p99 whole life / steady",
        [
            f"{s['calls']}: {_f(s['p99_ms'])} / {_f(s.get('steady_p99_ms'))} ms" if s else "–"
            for s in top
        ],
    )
    row(
        "capacity (p99 < 20 ms, 0 lost)",
        [str(t.get("capacity")) if t.get("capacity") is not None else "none" for t in targets],
    )
    row("what bounded it", [_bound(t) for t in targets])
    for key, name, digits in (
        ("server_cpu_us_per_frame", "target CPU µs / frame (worst step)", 0),
        ("server_cpu_s_per_call_minute", "target CPU s / call-minute (worst step)", 2),
        ("rss_per_call_kb", "target RSS / call KiB (worst step)", 0),
        ("generator_lateness_p99_ms", "generator send lateness p99 (worst step)", 2),
        ("generator_cpu_percent", "generator CPU % (worst step)", 0),
    ):
        row(name, [_f(_worst(_trusted(t["frame_round_trip"]), key), digits) for t in targets])
    row("errors", [str(len(t.get("errors") or [])) for t in targets])
    return lines


def _curve_rows(targets: list[dict[str, Any]]) -> list[str]:
    counts = sorted({s["calls"] for t in targets for s in t["frame_round_trip"]})
    head = "| calls | " + " | ".join(f"{t['target']['label']} p50 / p99 / lost" for t in targets)
    lines = [head + " |", "|---:|" + "---:|" * len(targets)]
    for n in counts:
        cells = []
        for t in targets:
            step = next((s for s in t["frame_round_trip"] if s["calls"] == n), None)
            if step is None:
                cells.append("–")
                continue
            mark = " ⚠ generator late" if step.get("generator_late") else ""
            refused = f", {step['refused_calls']} refused" if step.get("refused_calls") else ""
            cells.append(
                f"{step['p50_ms']:.2f} / {step['p99_ms']:.2f} ms / {step['lost']}{refused}{mark}"
            )
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def _agent_rows(targets: list[dict[str, Any]]) -> list[str]:
    head = "| | " + " | ".join(t["target"]["label"] for t in targets) + " |"
    lines = [head, "|---|" + "---:|" * len(targets)]
    counts = sorted({s["calls"] for t in targets for s in t["agent"]["steps"]})
    for n in counts:
        steps = [next((s for s in t["agent"]["steps"] if s["calls"] == n), None) for t in targets]

        def cells(fn: Any, steps: list[dict[str, Any] | None] = steps) -> list[str]:
            return [fn(s) if s else "–" for s in steps]

        lines.append(f"| **{n} call(s)** |" + " |" * len(targets))
        for key, name in (("turn_sent_ms", "sent"), ("turn_heard_ms", "heard")):
            lines.append(
                f"| turn latency, {name} p50 / p90 | "
                + " | ".join(
                    cells(lambda s, k=key: f"{_f(_pct(s[k], 50), 0)} / {_f(_pct(s[k], 90), 0)} ms")
                )
                + " |"
            )
        lines.append(
            "| replies / utterances (no reply) | "
            + " | ".join(cells(lambda s: f"{s['replies']} / {s['utterances']} ({s['no_reply']})"))
            + " |"
        )
        lines.append(
            "| premature replies | " + " | ".join(cells(lambda s: str(s["premature"]))) + " |"
        )
        lines.append(
            "| barge-in → clear p50 / p90 (ignored) | "
            + " | ".join(
                cells(
                    lambda s: (
                        f"{_f(_pct(s['barge_in_ms'], 50), 0)} / "
                        f"{_f(_pct(s['barge_in_ms'], 90), 0)} ms ({s['barge_ins_ignored']})"
                    )
                )
            )
            + " |"
        )
        lines.append(
            "| generator lateness p99, CPU | "
            + " | ".join(
                cells(
                    lambda s: (
                        f"{_f(s['generator_lateness_p99_ms'])} ms, "
                        f"{s['generator_cpu_percent']:.0f} %"
                        + (" ⚠" if s["generator_late"] else "")
                    )
                )
            )
            + " |"
        )
        lines.append(
            "| target CPU % | " + " | ".join(cells(lambda s: _f(s["server_cpu_percent"], 0))) + " |"
        )
        lines.append(
            "| failed calls | " + " | ".join(cells(lambda s: str(s["failed_calls"]))) + " |"
        )
    return lines


def _detected(result: dict[str, Any]) -> str:
    found = result.get("detection")
    mode = result.get("mode") or "not measured"
    return f"{mode} (detected)" if found else f"{mode}"


def _bound(result: dict[str, Any]) -> str:
    bound = result.get("capacity_bound")
    if not bound:
        return "–"
    return f"{bound['kind']}" + (f" at {bound['at_calls']}" if bound.get("at_calls") else "")


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """The comparison as Markdown."""
    targets = report["targets"]
    m = report["machine"]
    lines = [
        "# Side by side",
        "",
        f"{report['when']} · {m.get('cpu_model')} · {m.get('cpus')} CPUs · load "
        f"{m.get('load_average')} · Python {report['versions'].get('python')}",
        "",
        "Every target was measured by the same load generator (an emulated Twilio: signed "
        "webhook, TwiML, `connected`/`start`, 20 ms `media` on a real-time clock, marks echoed "
        "when played, `clear` honoured, `stop`) on the same machine; its own send lateness and "
        "CPU are given so that a figure measured by a late generator can be rejected.",
    ]
    echo = [t for t in targets if t.get("mode") == "echo"]
    agents = [t for t in targets if t.get("mode") == "agent"]
    if echo:
        lines += ["", "## Echo: frame round trip and capacity", "", *_echo_rows(echo)]
        lines += ["", "### Capacity curve", "", *_curve_rows(echo)]
        for t in echo:
            bound = t.get("capacity_bound")
            if bound:
                lines += ["", f"- **{t['target']['label']}**: {bound['detail']}."]
    if agents:
        lines += ["", "## Voice agents: turn-taking", "", *_agent_rows(agents)]
    broken = [t for t in targets if t.get("mode") not in ("echo", "agent")]
    for t in broken:
        lines += ["", f"- **{t['target']['label']}**: not measured."]
    errors = [(t["target"]["label"], e) for t in targets for e in (t.get("errors") or [])[:5]]
    if errors:
        lines += ["", "## Errors (first few per target)", ""]
        lines += [f"- {label}: {error}" for label, error in errors]
    lines += ["", "## Targets", ""]
    for t in targets:
        desc = {k: v for k, v in t["target"].items() if k != "label"}
        lines.append(f"- **{t['target']['label']}**: `{json.dumps(desc)}`")
    lines += ["", f"Versions: {json.dumps(report['versions'])}", ""]
    path.write_text("\n".join(lines))


def write_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """Round-trip distributions and capacity curves of the echo targets; turn latency of the
    agents."""
    made: list[Path] = []
    echo = [t for t in report["targets"] if t.get("mode") == "echo" and t["frame_round_trip"]]
    if echo:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, t in enumerate(echo):
            steps = _trusted(t["frame_round_trip"]) or t["frame_round_trip"]
            color = f"C{i}"
            first, last = steps[0], steps[-1]
            ax.plot(
                first["cdf_ms"],
                PERCENTILES,
                color=color,
                linestyle=":",
                label=f"{t['target']['label']}, {first['calls']} calls",
            )
            if last is not first:
                ax.plot(
                    last["cdf_ms"],
                    PERCENTILES,
                    color=color,
                    label=f"{t['target']['label']}, {last['calls']} calls",
                )
        ax.set_xscale("log")
        ax.set_xlabel("frame round trip (ms, log)")
        ax.set_ylabel("percentile")
        ax.axvline(20, color="grey", linestyle=":")
        ax.set_title("Frame round trip, side by side")
        ax.legend(fontsize="small")
        made.append(folder / "compare_rtt_cdf.png")
        fig.savefig(made[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, t in enumerate(echo):
            steps = t["frame_round_trip"]
            ax.plot(
                [s["calls"] for s in steps],
                [s["p99_ms"] for s in steps],
                "o-",
                color=f"C{i}",
                label=t["target"]["label"],
            )
            late = [s for s in steps if s.get("generator_late") or s["lost"]]
            ax.plot(
                [s["calls"] for s in late],
                [s["p99_ms"] for s in late],
                "x",
                color="black",
                markersize=9,
            )
        ax.axhline(20, color="grey", linestyle=":")
        ax.set_yscale("log")
        ax.set_xlabel("concurrent calls")
        ax.set_ylabel("p99 round trip (ms, log)")
        ax.set_title("Capacity curves (x: frames lost or generator late)")
        ax.legend(fontsize="small")
        made.append(folder / "compare_capacity.png")
        fig.savefig(made[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)

    agents = [t for t in report["targets"] if t.get("mode") == "agent" and t["agent"]["steps"]]
    if agents:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, t in enumerate(agents):
            steps = t["agent"]["steps"]
            calls = [s["calls"] for s in steps]
            for q, style in ((50, "o-"), (90, "s--")):
                ax.plot(
                    calls,
                    [_pct(s["turn_heard_ms"], q) or math.nan for s in steps],
                    style,
                    color=f"C{i}",
                    label=f"{t['target']['label']} heard p{q}",
                )
        ax.set_xscale("log")
        ax.set_xlabel("concurrent calls")
        ax.set_ylabel("end of speech → reply heard (ms)")
        ax.set_title("Turn latency, side by side")
        ax.legend(fontsize="small")
        made.append(folder / "compare_turns.png")
        fig.savefig(made[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    return made


def write_comparison(results: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Write ``comparison.json``, ``comparison.md`` and the plots into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    report = comparison(results)
    (folder / "comparison.json").write_text(json.dumps(report, indent=1))
    write_markdown(report, folder / "comparison.md")
    return [folder / "comparison.json", folder / "comparison.md", *write_plots(report, folder)]
