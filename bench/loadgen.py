"""``python -m bench.loadgen``: N emulated calls against a server; prints a JSON summary.

Runs in its own process (the benchmark pins it to a CPU of its own). Reports, besides the round
trips, its own CPU time and how late its frames left, so a reader can tell whether the
generator kept up.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time
from pathlib import Path

import httpx
import numpy as np
import trio

from engine.testing import read_audio
from engine.testing.load import LoadCall, run_load_call

__all__ = ["main"]

RAMP_S = 0.02  # between call starts, so setup does not burst


async def _run(
    url: str, token: str, calls: int, duration: float, frames: list[bytes]
) -> list[LoadCall]:
    records = [LoadCall() for _ in range(calls)]
    async with httpx.AsyncClient(timeout=30) as client, trio.open_nursery() as nursery:
        for record in records:
            nursery.start_soon(run_load_call, url, token, frames, duration, record, client)
            await trio.sleep(RAMP_S)
    return records


def summarize(records: list[LoadCall]) -> dict[str, object]:
    """Round trips (ms), lost / mismatched / late counts, and the generator's lateness."""
    rtts: list[np.ndarray] = []
    sent = echoed = mismatched = 0
    # A call refused by admission control is an answer, not a failure.
    refused = sum(1 for r in records if r.error and r.error.startswith("CallRefused"))
    errors = [r.error for r in records if r.error and not r.error.startswith("CallRefused")]
    for record in records:
        n = min(len(record.echoed), len(record.sent))
        if n:
            rtts.append((np.asarray(record.echoed[:n]) - np.asarray(record.sent[:n])) * 1000)
        sent += len(record.sent)
        echoed += len(record.echoed)
        mismatched += record.mismatched
    rtt = np.concatenate(rtts) if rtts else np.zeros(0)
    lateness = (
        np.concatenate(
            [np.asarray(r.lateness) for r in records if len(r.lateness)] or [np.zeros(0)]
        )
        * 1000
    )
    return {
        "calls": len(records),
        "errors": errors[:5],
        "failed_calls": len(errors),
        "refused_calls": refused,
        "frames_sent": sent,
        "frames_echoed": echoed,
        "lost": max(0, sent - echoed),
        "mismatched": mismatched,
        "rtt_ms": rtt.round(3).tolist(),
        "send_lateness_p99_ms": float(np.percentile(lateness, 99)) if len(lateness) else None,
        "send_lateness_max_ms": float(lateness.max()) if len(lateness) else None,
    }


def main() -> None:
    """Parse arguments, run the calls, print the JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--audio", type=Path, required=True)
    args = parser.parse_args()
    ulaw = read_audio(args.audio)
    frames = [ulaw[i : i + 160] for i in range(0, len(ulaw) - 159, 160)]
    gc.freeze()
    started = time.process_time()
    records = trio.run(_run, args.url, args.token, args.calls, args.duration, frames)
    result = summarize(records)
    result["cpu_s"] = time.process_time() - started
    result["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


if __name__ == "__main__":
    main()
