"""End of turn live: many talking calls on one server, Smart Turn against the VAD rule.

:func:`live_load` starts ``voice-engine serve --pipeline bench.probe:create --turn T`` (the
probe stage plays a marker frame at every end of turn, :mod:`bench.probe`) and drives it from
this process: ``calls`` callers each read the real recordings of :mod:`bench.turn_material`
one after the other (five long sentences with twelve pauses inside, ~85 s; one call per
recording, as the offline replay takes one stream per recording), each caller from a different
recording and with its own offset so that their pauses do not line up; and ``echo_calls`` echo
calls (``?pipeline=echo``) speaking meanwhile, whose frames measure the media loop.

Per turn type it reports what a caller lives with: premature ends of turn per internal pause,
latency from the real end of speech (the last aligned word) to the end-of-turn marker, p50/p99;
from the server's ``/metrics``, how the turns were decided (model, max silence, fallback) and
what became of the questions (answered, saturated, timed out), the answer time, the event loop's
lag; and the echo calls' round trip (a frame sent → the same frame back, at the caller), p50/p99.

``python -m bench.end_of_turn_live --calls 10 50`` prints a table (``--json FILE`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import trio

from bench.material import PausedSpeech
from bench.probe import END_MARKER
from bench.procs import Server, cpu_seconds, start_server
from bench.turn_material import Speech, real_speech
from bench.turn_taking import percentile, score_speech
from engine.media.codec import FRAME_BYTES
from engine.testing import StreamRecord, open_inbound_call

__all__ = ["live_load", "round_trips", "scrape"]


def round_trips(record: StreamRecord) -> list[float]:
    """An echo call's round trips (ms): each returned frame's arrival − when it was sent."""
    out: list[float] = []
    offset = 0
    for arrived, payload in record.received:
        offset += len(payload)
        frame = offset // FRAME_BYTES - 1
        if 0 <= frame < len(record.send_lateness):
            sent = record.t0 + frame * 0.020 + record.send_lateness[frame]
            out.append((arrived - sent) * 1000)
    return out


async def _talker(
    url: str,
    token: str,
    speeches: Sequence[Speech],
    offset_s: float,
    decided: list[tuple[PausedSpeech, list[float]]],
) -> None:
    await trio.sleep(offset_s)
    for speech in speeches:
        async with open_inbound_call(url, token) as call:
            await call.say(speech.material.ulaw)  # queued before the first tick: media time
            await call.pause(1.5)
            record = call.record
        times = [(t - record.t0) * 1000 for t, p in record.received if END_MARKER in p]
        decided.append((speech.material, times))


async def _echo(url: str, token: str, audio: bytes, records: list[StreamRecord]) -> None:
    async with open_inbound_call(url, token, path="/twilio/voice?pipeline=echo") as call:
        await call.say(audio)
    records.append(call.record)


async def _drive(
    url: str, token: str, calls: int, echo_calls: int, seed: int, recordings: int | None
) -> tuple[list[tuple[PausedSpeech, list[float]]], list[StreamRecord]]:
    speeches = real_speech()[:recordings]
    rng = np.random.default_rng(seed)
    decided: list[tuple[PausedSpeech, list[float]]] = []
    echoes: list[StreamRecord] = []
    total_s = sum(s.material.duration_ms for s in speeches) / 1000
    async with trio.open_nursery() as nursery:
        for k in range(calls):
            own = speeches[k % len(speeches) :] + speeches[: k % len(speeches)]
            offset = float(rng.uniform(0, 4))
            nursery.start_soon(_talker, url, token, own, offset, decided)
        echo_audio = b"".join(s.material.ulaw for s in speeches)[: int(total_s * 8000) // 2]
        for _ in range(echo_calls):
            nursery.start_soon(_echo, url, token, echo_audio, echoes)
    return decided, echoes


def scrape(url: str) -> dict[str, float]:
    """The server's ``voice_engine_turn_*`` and loop-lag samples, by name and labels."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = re.compile(r"^(voice_engine_(turn_\w+|event_loop_lag_seconds|frame_step\w*))(\{.*\})?")
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = wanted.match(line)
        if match and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _histogram_p(samples: dict[str, float], name: str, q: float) -> float | None:
    """The ``q`` quantile (0–1) of a histogram from its cumulative buckets (upper bound)."""
    buckets = sorted(
        (float(m.group(1)), v)
        for k, v in samples.items()
        if k.startswith(name + "_bucket")
        and (m := re.search(r'le="([^"]+)"', k))
        and m.group(1) != "+Inf"
    )
    total = samples.get(name + "_count", 0.0)
    if not total:
        return None
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return None


def live_load(
    turn: str,
    calls: int,
    *,
    echo_calls: int = 4,
    threads: int | None = None,
    seed: int = 0,
    log: Path | None = None,
    server_cpu: int | None = None,
    generator_cpu: int | None = None,
    recordings: int | None = None,
) -> dict[str, object]:
    """One live run (see the module docstring); ``threads``: ``serve --turn-threads``;
    ``recordings``: read only the first this many recordings (all five by default);
    ``server_cpu`` / ``generator_cpu``: pin the server (its media loop and the model's threads)
    and this process's callers to a core each, so that the echo round trip is the server's."""
    log = log or Path(tempfile.gettempdir()) / "end_of_turn_live.log"
    server: Server = start_server(
        "bench.probe:create",
        cpu=server_cpu,
        media_listener=False,
        log=log,
        hangover_ms=500,
        turn=turn,
        extra=["--max-calls", "unlimited"] + (["--turn-threads", str(threads)] if threads else []),
    )
    affinity = os.sched_getaffinity(0)
    try:
        if generator_cpu is not None:
            os.sched_setaffinity(0, {generator_cpu})
        cpu_before, started = cpu_seconds(server.process.pid), time.perf_counter()
        decided, echoes = trio.run(
            _drive, server.url, server.auth_token, calls, echo_calls, seed, recordings
        )
        elapsed = time.perf_counter() - started
        server_seconds = cpu_seconds(server.process.pid) - cpu_before
        samples = scrape(server.url)
    finally:
        os.sched_setaffinity(0, affinity)
        server.stop()
    pauses = premature = missed = decisions = 0
    latency: list[float] = []
    for material, times in decided:
        scored = score_speech(material, times, 0)
        pauses += scored.pauses
        premature += scored.premature
        missed += scored.missed
        decisions += scored.decisions
        latency += scored.latency_ms
    trips = [t for record in echoes for t in round_trips(record)]

    def count(name: str, outcome: str) -> int:
        return int(samples.get(f'voice_engine_turn_{name}_total{{outcome="{outcome}"}}', 0))

    return {
        "turn": turn,
        "calls": calls,
        "threads": threads,
        "server_cpu": server_cpu,
        "generator_cpu": generator_cpu,
        "pauses": pauses,
        "premature": premature,
        "premature_per_pause": round(premature / pauses, 3) if pauses else None,
        "missed": missed,
        "latency_p50_ms": percentile(latency, 50),
        "latency_p99_ms": percentile(latency, 99),
        "by_model": count("decisions", "model"),
        "by_max_silence": count("decisions", "max_silence"),
        "by_fallback": count("decisions", "fallback"),
        "by_unsure": count("decisions", "unsure"),
        "answered": count("questions", "answered"),
        "saturated": count("questions", "saturated"),
        "timed_out": count("questions", "timed_out"),
        "failed": count("questions", "failed"),
        "answer_p50_le_s": _histogram_p(samples, "voice_engine_turn_analysis_seconds", 0.5),
        "answer_p99_le_s": _histogram_p(samples, "voice_engine_turn_analysis_seconds", 0.99),
        "loop_lag_ms": round(samples.get("voice_engine_event_loop_lag_seconds", 0.0) * 1000, 2),
        "echo_rtt_p50_ms": _round(percentile(trips, 50)),
        "echo_rtt_p99_ms": _round(percentile(trips, 99)),
        "server_cpu_share": round(server_seconds / elapsed, 2),
        "load_average": round(os.getloadavg()[0], 2),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main(argv: Sequence[str] | None = None) -> None:
    """Print a row per (turn type, calls)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--turn", nargs="+", default=["vad", "smart-turn"])
    parser.add_argument("--echo-calls", type=int, default=4)
    parser.add_argument("--threads", type=int, help="serve --turn-threads (smart-turn)")
    parser.add_argument("--server-cpu", type=int, help="pin the server to this core")
    parser.add_argument("--generator-cpu", type=int, help="pin the callers to this core")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows = [
        live_load(
            turn,
            calls,
            echo_calls=args.echo_calls,
            threads=args.threads,
            server_cpu=args.server_cpu,
            generator_cpu=args.generator_cpu,
        )
        for calls in args.calls
        for turn in args.turn
    ]
    for row in rows:
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
