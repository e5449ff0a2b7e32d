"""``python -m bench.loadgen``: N emulated calls against a server; prints a JSON summary.

Runs in its own process (the benchmark pins it to a CPU of its own) and drives every call from
one epoll loop (:mod:`engine.testing.load`). Besides the round trips it reports its own CPU
share and how late its frames left, and flags itself ``generator_late`` when either says it
did not keep up — a capacity figure measured by a late generator says nothing about the
server. ``--processes P --cpus 2,3`` splits the calls over P processes pinned to those CPUs and
merges their results (for machines with cores to spare).

Any Media Streams server can be the target: ``--url`` is a base URL whose voice webhook is
``--webhook-path`` (``''``: the URL is the webhook itself), or a ``ws(s)://`` stream URL dialled
directly with ``--param`` custom parameters; ``https``/``wss`` go over TLS (``--ca-file`` to
trust a private CA). ``--record-replies`` adds ``call_records``: per call, when each frame left
and when each reply message arrived, began to play and where its sound begins (for measuring
a voice agent's turns).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import ssl
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from engine.testing import read_audio
from engine.testing.load import LoadCall, LoadPlan, LoadRun, run_load
from engine.testing.load_tls import client_context

__all__ = ["call_record", "is_late", "main", "merge", "summarize"]

LATE_P99_MS = 5.0
"""A generator whose send lateness p99 exceeds this is late."""
LATE_CPU_SHARE = 0.85
"""A generator busier than this share of its core is (about to be) late."""


def summarize(run: LoadRun) -> dict[str, Any]:
    """Round trips (ms), per-call outcomes, lost / mismatched counts, the generator's lateness
    and CPU share."""
    records = run.calls
    rtts: list[np.ndarray] = []
    sent = echoed = lost = mismatched = 0
    for record in records:
        n = min(len(record.echoed), len(record.sent))
        if n:
            rtts.append((np.asarray(record.echoed[:n]) - np.asarray(record.sent[:n])) * 1000)
        sent += len(record.sent)
        echoed += len(record.echoed)
        if record.bidirectional:  # a <Start><Stream> gets nothing back
            lost += max(0, len(record.sent) - len(record.echoed))
        mismatched += record.mismatched
    rtt = np.concatenate(rtts) if rtts else np.zeros(0)
    steady = _steady(records)
    lateness = np.concatenate([np.asarray(r.lateness) for r in records] or [np.zeros(0)]) * 1000
    errors = [r.error for r in records if r.error]
    share = run.cpu_s / run.wall_s if run.wall_s > 0 else 0.0
    result: dict[str, Any] = {
        "calls": len(records),
        "admitted_calls": sum(r.outcome == "admitted" for r in records),
        "refused_calls": sum(r.outcome == "refused" for r in records),
        "failed_calls": len(errors),
        "errors": errors[:5],
        "refusals": dict(Counter(r.refusal for r in records if r.refusal)),
        "call_outcomes": [_outcome(r) for r in records],
        "frames_sent": sent,
        "frames_echoed": echoed,
        "lost": lost,
        "mismatched": mismatched,
        "one_way_calls": sum(not r.bidirectional for r in records),
        "marks_echoed": sum(r.marks for r in records),
        "clears": sum(len(r.clears) for r in records),
        "rtt_ms": rtt.round(3).tolist(),
        "rtt_steady_frames": len(steady),
        "rtt_steady_p50_ms": _pct(steady, 50),
        "rtt_steady_p99_ms": _pct(steady, 99),
        "rtt_steady_p999_ms": _pct(steady, 99.9),
        "send_lateness_p50_ms": _pct(lateness, 50),
        "send_lateness_p99_ms": _pct(lateness, 99),
        "send_lateness_max_ms": float(lateness.max()) if len(lateness) else None,
        "peak_streaming": run.peak_streaming,
        "cpu_s": run.cpu_s,
        "wall_s": run.wall_s,
        "cpu_share": share,
        "steady_cpu_share": run.steady_cpu_share,
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "processes": 1,
    }
    result |= is_late(result)
    return result


def _steady(records: list[LoadCall]) -> np.ndarray:
    """Round trips (ms) of the frames sent while every call streamed: after the last call's
    first frame, up to the first call's last — no call setting up or ending meanwhile."""
    streamed = [r for r in records if len(r.sent) and len(r.echoed)]
    if not streamed:
        return np.zeros(0)
    start = max(r.sent[0] for r in streamed)
    end = min(r.sent[-1] for r in streamed)
    parts = []
    for record in streamed:
        n = min(len(record.echoed), len(record.sent))
        sent = np.asarray(record.sent[:n])
        keep = (sent >= start) & (sent <= end)
        parts.append((np.asarray(record.echoed[:n])[keep] - sent[keep]) * 1000)
    return np.concatenate(parts)


def call_record(record: LoadCall) -> dict[str, Any]:
    """One call's timeline for ``--record-replies``, in ms from the slot of its first frame:
    when each frame left (``sent_ms``), when each reply message arrived (``reply_ms``) and began
    to play (``heard_ms``), its length (``reply_bytes``, 8 per ms), where its sound begins
    (``sound_ms``, −1: none) and each ``clear`` (``clears_ms``)."""
    origin = record.sent[0] - record.lateness[0] if len(record.sent) else 0.0

    def ms(times: Any) -> list[float]:
        return [round((t - origin) * 1000, 2) for t in times]

    return {
        "outcome": _outcome(record),
        "error": record.error,
        "sent_ms": ms(record.sent),
        "reply_ms": ms(record.echoed),
        "heard_ms": ms(record.heard),
        "reply_bytes": list(record.reply_bytes),
        "sound_ms": list(record.sound_ms),
        "clears_ms": ms(record.clears),
        "marks_echoed": record.marks,
    }


def _outcome(record: LoadCall) -> str:
    return f"refused:{record.refusal}" if record.outcome == "refused" else record.outcome


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def is_late(result: dict[str, Any]) -> dict[str, Any]:
    """``generator_late`` and its reasons: lateness p99 over :data:`LATE_P99_MS` or a CPU share
    (while the most calls streamed, else over the run) over :data:`LATE_CPU_SHARE`."""
    reasons = []
    p99 = result["send_lateness_p99_ms"]
    if p99 is not None and p99 > LATE_P99_MS:
        reasons.append(f"send lateness p99 {p99:.1f} ms > {LATE_P99_MS:g} ms")
    steady = result.get("steady_cpu_share")
    share = steady if steady is not None else result["cpu_share"]
    if share > LATE_CPU_SHARE:
        reasons.append(f"CPU share {share:.0%} > {LATE_CPU_SHARE:.0%}")
    return {"generator_late": bool(reasons), "generator_late_reasons": reasons}


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from the results of several generator processes.

    Counts and CPU seconds add up; round trips and outcomes are concatenated; lateness
    percentiles, steady round-trip percentiles and CPU shares are the worst process's (an upper
    bound of the whole's); the whole is late when any process was.
    """
    total: dict[str, Any] = {"processes": len(parts)}
    for key in ("calls", "admitted_calls", "refused_calls", "failed_calls", "frames_sent"):
        total[key] = sum(p[key] for p in parts)
    for key in ("frames_echoed", "lost", "mismatched", "marks_echoed", "clears", "cpu_s"):
        total[key] = sum(p[key] for p in parts)
    total["one_way_calls"] = sum(p.get("one_way_calls", 0) for p in parts)
    total["involuntary_switches"] = sum(p.get("involuntary_switches", 0) for p in parts)
    total["peak_streaming"] = sum(p["peak_streaming"] for p in parts)
    total["errors"] = [e for p in parts for e in p["errors"]][:5]
    refusals: Counter[str] = Counter()
    for p in parts:
        refusals.update(p["refusals"])
    total["refusals"] = dict(refusals)
    total["call_outcomes"] = [o for p in parts for o in p["call_outcomes"]]
    if any("call_records" in p for p in parts):
        total["call_records"] = [r for p in parts for r in p.get("call_records", [])]
    total["rtt_ms"] = [v for p in parts for v in p["rtt_ms"]]
    total["rtt_steady_frames"] = sum(p.get("rtt_steady_frames", 0) for p in parts)
    for key in (
        "send_lateness_p50_ms",
        "send_lateness_p99_ms",
        "send_lateness_max_ms",
        "rtt_steady_p50_ms",
        "rtt_steady_p99_ms",
        "rtt_steady_p999_ms",
    ):
        values: list[float] = [p[key] for p in parts if p.get(key) is not None]
        total[key] = max(values) if values else None
    for key in ("wall_s", "cpu_share", "max_rss_kib"):
        total[key] = max(p[key] for p in parts)
    steady = [p["steady_cpu_share"] for p in parts if p["steady_cpu_share"] is not None]
    total["steady_cpu_share"] = max(steady) if steady else None
    total["generator_late"] = any(p["generator_late"] for p in parts)
    total["generator_late_reasons"] = [r for p in parts for r in p["generator_late_reasons"]]
    total["per_process"] = [
        {k: p[k] for k in ("calls", "cpu_share", "send_lateness_p99_ms", "generator_late")}
        for p in parts
    ]
    return total


def _split(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Run the calls in ``args.processes`` child processes pinned to ``args.cpus``; merge."""
    cpus = args.cpus or []
    share, extra = divmod(args.calls, args.processes)
    children = []
    base = _without(argv, {"--processes", "--cpus", "--calls"})
    for i in range(args.processes):
        calls = share + (1 if i < extra else 0)
        if not calls:
            continue
        command = [sys.executable, "-m", "bench.loadgen", *base, "--calls", str(calls)]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        if cpus:
            os.sched_setaffinity(child.pid, {cpus[i % len(cpus)]})
        children.append(child)
    parts = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"a generator process failed ({child.returncode})")
        parts.append(json.loads(out))
    return merge(parts)


def _without(argv: list[str], options: set[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif arg.split("=", 1)[0] not in options:
            out.append(arg)
    return out


def _parameter(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def _cpus(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c]


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument(
        "--url",
        required=True,
        help="server http(s):// base URL (the webhook is --webhook-path), or a ws(s):// stream URL",
    )
    p.add_argument(
        "--webhook-path",
        default="/twilio/voice",
        help="the voice webhook's path under --url (default %(default)s; '' = --url is the "
        "webhook)",
    )
    p.add_argument("--token", help="Auth Token that signs the webhook and the handshake")
    p.add_argument("--calls", type=int, required=True)
    p.add_argument("--duration", type=float, required=True, help="seconds of audio per call")
    p.add_argument("--audio", type=Path, required=True, help="WAV or raw μ-law caller audio")
    p.add_argument("--burst", action="store_true", help="start every call at once")
    p.add_argument("--spacing-ms", type=float, default=5.0, help="between call starts")
    p.add_argument(
        "--webhook-concurrency",
        type=int,
        default=64,
        help="calls setting up (webhook + handshake) at once, at most",
    )
    p.add_argument("--setup-timeout", type=float, default=10.0, help="seconds per setup step")
    p.add_argument(
        "--batch-ms",
        type=float,
        default=1.0,
        help="nap up to this long between reads (kernel receive timestamps keep arrival times "
        "exact); 0 wakes for every arrival",
    )
    p.add_argument(
        "--param",
        type=_parameter,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="customParameters for a ws:// URL (repeatable)",
    )
    p.add_argument("--ca-file", help="also trust this CA for https:// and wss:// (PEM)")
    p.add_argument(
        "--insecure-tls", action="store_true", help="do not check the server's certificate"
    )
    p.add_argument(
        "--record-replies",
        action="store_true",
        help="add call_records: each call's frames, replies, playback and clears (for agents)",
    )
    p.add_argument("--processes", type=int, default=1, help="split calls over P processes")
    p.add_argument("--cpus", type=_cpus, help="CPUs to pin the processes to, e.g. 2,3")
    return p


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the calls, print the JSON."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.processes > 1:
        print(json.dumps(_split(args, argv)))
        return
    if args.cpus:
        os.sched_setaffinity(0, {args.cpus[0]})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # a socket per call, and some to spare
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ulaw = read_audio(args.audio)
    frames = [ulaw[i : i + 160] for i in range(0, len(ulaw) - 159, 160)]
    context: ssl.SSLContext | None = None
    if args.ca_file or args.insecure_tls:
        context = client_context(args.ca_file, verify=not args.insecure_tls)
    plan = LoadPlan(
        url=args.url,
        webhook_path=args.webhook_path,
        ssl_context=context,
        record_replies=args.record_replies,
        calls=args.calls,
        duration=args.duration,
        frames=frames,
        auth_token=args.token,
        parameters=dict(args.param),
        spacing=0.0 if args.burst else args.spacing_ms / 1000,
        setup_concurrency=args.webhook_concurrency,
        setup_timeout=args.setup_timeout,
        batch=args.batch_ms / 1000,
    )
    gc.collect()
    gc.freeze()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    try:
        run = run_load(plan)
    except ValueError as exc:
        raise SystemExit(f"bench.loadgen: {exc}") from None
    result = summarize(run)
    if args.record_replies:
        result["call_records"] = [call_record(r) for r in run.calls]
    # Preemptions: many mean another process took the generator's CPU (lateness not its own).
    result["involuntary_switches"] = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - before
    print(json.dumps(result))


if __name__ == "__main__":
    main()
