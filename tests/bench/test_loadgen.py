"""``python -m bench.loadgen``: its JSON contract against a real server, splitting over
processes, bursts with refusals, the ``generator_late`` flag, and how the bench treats a step
whose generator was late (capacity search stops, the row is marked untrustworthy)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.loadgen import is_late, merge, parser
from bench.procs import Server, run_generator, start_server, usable_cpus
from bench.report import write_markdown
from bench.scenarios import RttStep, as_dict, capacity, generator_limit

CONTRACT = {
    "calls",
    "admitted_calls",
    "refused_calls",
    "failed_calls",
    "errors",
    "refusals",
    "call_outcomes",
    "frames_sent",
    "frames_echoed",
    "lost",
    "mismatched",
    "marks_echoed",
    "clears",
    "rtt_ms",
    "send_lateness_p50_ms",
    "send_lateness_p99_ms",
    "send_lateness_max_ms",
    "peak_streaming",
    "cpu_s",
    "wall_s",
    "cpu_share",
    "steady_cpu_share",
    "max_rss_kib",
    "processes",
    "generator_late",
    "generator_late_reasons",
    "involuntary_switches",
    "rtt_steady_frames",
    "rtt_steady_p50_ms",
    "rtt_steady_p99_ms",
    "rtt_steady_p999_ms",
}


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    path = tmp_path / "caller.ulaw"
    path.write_bytes(bytes(range(256)) * 40)  # 64 distinct frames
    return path


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[Server]:
    server = start_server("echo", cpu=None, log=tmp_path / "echo.log")
    yield server
    assert server.stop() == 0


def test_the_json_contract_and_every_frame_echoed(echo: Server, audio: Path) -> None:
    result = run_generator(echo, 2, 1.0, cpu=None, audio=audio)
    assert set(result) >= CONTRACT
    assert result["call_outcomes"] == ["admitted", "admitted"]
    assert (result["admitted_calls"], result["refused_calls"], result["failed_calls"]) == (2, 0, 0)
    assert result["frames_sent"] == result["frames_echoed"] == 100
    assert result["lost"] == result["mismatched"] == 0 and result["marks_echoed"] > 0
    rtt = result["rtt_ms"]
    assert isinstance(rtt, list) and len(rtt) == 100 and min(rtt) > 0
    assert result["cpu_share"] == pytest.approx(result["cpu_s"] / result["wall_s"])  # type: ignore[operator]
    assert result["generator_late"] is bool(result["generator_late_reasons"])
    assert result["processes"] == 1 and result["peak_streaming"] == 2
    # Steady: the frames sent while both calls streamed (all but the first's head start).
    assert 90 <= result["rtt_steady_frames"] <= 100
    assert min(rtt) <= result["rtt_steady_p50_ms"] <= result["rtt_steady_p99_ms"] <= max(rtt)


def test_with_record_replies_each_calls_timeline_comes_back(echo: Server, audio: Path) -> None:
    result = run_generator(echo, 2, 1.0, cpu=None, audio=audio, record_replies=True)
    records = result["call_records"]
    assert len(records) == 2
    for record in records:
        assert record["outcome"] == "admitted" and record["error"] is None
        sent, reply, heard = record["sent_ms"], record["reply_ms"], record["heard_ms"]
        assert len(sent) == len(reply) == len(heard) == len(record["sound_ms"]) == 50
        assert record["reply_bytes"] == [160] * 50 and record["sound_ms"] == [0] * 50
        assert abs(sent[0]) < 20  # from the slot of its first frame
        assert all(s < r <= h for s, r, h in zip(sent, reply, heard, strict=True))
        assert record["clears_ms"] == [] and record["marks_echoed"] > 0
    # Without the flag, the contract is as before.
    assert "call_records" not in run_generator(echo, 1, 0.2, cpu=None, audio=audio)


def test_calls_split_over_processes_are_merged(echo: Server, audio: Path) -> None:
    result = run_generator(echo, 3, 1.0, cpu=None, audio=audio, processes=2, cpus=usable_cpus())
    assert result["processes"] == 2 and result["calls"] == 3
    assert result["call_outcomes"] == ["admitted"] * 3
    assert result["frames_sent"] == result["frames_echoed"] == 150 == len(result["rtt_ms"])  # type: ignore[arg-type]
    parts = result["per_process"]
    assert isinstance(parts, list) and [p["calls"] for p in parts] == [2, 1]


def test_a_burst_over_the_ceiling_is_admitted_and_refused_per_call(
    tmp_path: Path, audio: Path
) -> None:
    server = start_server("echo", cpu=None, log=tmp_path / "s.log", extra=["--max-calls", "2"])
    try:
        result = run_generator(
            server, 5, 1.0, cpu=None, audio=audio, burst=True, webhook_concurrency=1
        )
    finally:
        assert server.stop() == 0
    # One setup at a time: the first two are admitted, the rest hear busy while they stream.
    assert result["call_outcomes"] == ["admitted"] * 2 + ["refused:reject:busy"] * 3
    assert (result["admitted_calls"], result["refused_calls"], result["failed_calls"]) == (2, 3, 0)
    assert result["refusals"] == {"reject:busy": 3}
    assert result["frames_sent"] == 100 and result["lost"] == 0


BASE: dict[str, Any] = {"send_lateness_p99_ms": 1.0, "cpu_share": 0.5, "steady_cpu_share": None}


@pytest.mark.parametrize(
    ("change", "late", "reason"),
    [
        ({}, False, None),
        ({"send_lateness_p99_ms": 5.5}, True, "lateness"),
        ({"send_lateness_p99_ms": None}, False, None),
        ({"cpu_share": 0.9}, True, "CPU share"),
        ({"cpu_share": 0.9, "steady_cpu_share": 0.5}, False, None),  # idle ramp excluded
        ({"cpu_share": 0.5, "steady_cpu_share": 0.95}, True, "CPU share"),
    ],
)
def test_the_generator_is_late_when_lateness_or_cpu_share_says_so(
    change: dict[str, Any], late: bool, reason: str | None
) -> None:
    verdict = is_late(BASE | change)
    assert verdict["generator_late"] is late
    assert bool(verdict["generator_late_reasons"]) is late
    if reason:
        assert reason in verdict["generator_late_reasons"][0]


def part(calls: int, late: bool, p99: float, rtt: list[float]) -> dict[str, Any]:
    return {
        "calls": calls,
        "admitted_calls": calls,
        "refused_calls": 0,
        "failed_calls": 0,
        "frames_sent": 10 * calls,
        "frames_echoed": 10 * calls,
        "lost": 0,
        "mismatched": 0,
        "marks_echoed": calls,
        "clears": 0,
        "cpu_s": 1.0,
        "peak_streaming": calls,
        "errors": [],
        "refusals": {"reject:busy": 1},
        "call_outcomes": ["admitted"] * calls,
        "rtt_ms": rtt,
        "send_lateness_p50_ms": 0.1,
        "send_lateness_p99_ms": p99,
        "send_lateness_max_ms": p99 * 2,
        "wall_s": 5.0,
        "cpu_share": 0.2,
        "max_rss_kib": 1000,
        "steady_cpu_share": 0.3 if late else None,
        "generator_late": late,
        "generator_late_reasons": ["x"] if late else [],
    }


def test_merging_adds_counts_and_keeps_the_worst_process() -> None:
    merged = merge([part(2, False, 1.0, [1.0, 2.0]), part(3, True, 7.0, [3.0])])
    assert merged["calls"] == 5 and merged["frames_sent"] == 50 and merged["cpu_s"] == 2.0
    assert merged["rtt_ms"] == [1.0, 2.0, 3.0] and len(merged["call_outcomes"]) == 5
    assert merged["send_lateness_p99_ms"] == 7.0 and merged["send_lateness_max_ms"] == 14.0
    assert merged["generator_late"] is True and merged["generator_late_reasons"] == ["x"]
    assert merged["steady_cpu_share"] == 0.3 and merged["refusals"] == {"reject:busy": 2}
    assert merged["processes"] == 2 and merged["peak_streaming"] == 5


def test_the_command_line_takes_parameters_and_a_burst() -> None:
    required = ["--url", "ws://h/m", "--calls", "2", "--duration", "1", "--audio", "a.ulaw"]
    args = parser().parse_args(
        [*required, "--param", "tenant=42", "--param", "empty=", "--burst", "--cpus", "1,3"]
    )
    assert dict(args.param) == {"tenant": "42", "empty": ""}
    assert args.burst and args.cpus == [1, 3] and args.webhook_concurrency == 64
    with pytest.raises(SystemExit):
        parser().parse_args([*required, "--param", "novalue"])


def step(calls: int, *, healthy: bool, late: bool) -> RttStep:
    return RttStep(
        calls=calls,
        duration_s=5.0,
        frames_sent=calls * 250,
        lost=0 if healthy else 7,
        late=0,
        mismatched=0,
        failed_calls=0,
        refused_calls=0,
        p50_ms=1.0,
        p95_ms=2.0,
        p99_ms=3.0 if healthy else 30.0,
        max_ms=4.0,
        cdf_ms=[1.0] * 201,
        server_cpu_percent=50.0,
        server_cpu_s_per_call_minute=0.1,
        server_rss_mb=100.0,
        rss_per_call_kb=10.0,
        server_cpu_us_per_frame=123.0,
        generator_cpu_percent=95.0 if late else 40.0,
        generator_lateness_p99_ms=9.0 if late else 0.5,
        generator_lateness_max_ms=20.0,
        generator_late=late,
        generator_late_reasons=["send lateness p99 9.0 ms > 5 ms"] if late else [],
        peak_calls=calls,
    )


def test_a_step_with_refused_calls_did_not_carry_its_calls() -> None:
    carried = step(300, healthy=True, late=False)
    assert carried.healthy
    carried.refused_calls = 1
    assert not carried.healthy and capacity([carried]) is None


def test_the_capacity_search_stops_at_a_late_generator(tmp_path: Path) -> None:
    steps = [
        step(100, healthy=True, late=False),
        step(200, healthy=False, late=False),
        step(300, healthy=True, late=False),
        step(400, healthy=True, late=True),  # healthy-looking, but the generator was late
        step(500, healthy=True, late=False),
    ]
    assert capacity(steps) == 300 and generator_limit(steps) == 400
    assert capacity(steps[:3]) == 300 and generator_limit(steps[:3]) is None
    assert capacity([steps[3]]) is None
    result = {
        "config": {"when": "now", "server_cpu": 0, "generator_cpu": 1},
        "machine": {"cpu_model": "test"},
        "versions": {},
        "frame_round_trip": as_dict(steps[:4]),
        "capacity": capacity(steps),
        "capacity_generator_limit": generator_limit(steps),
    }
    write_markdown(json.loads(json.dumps(result)), tmp_path / "results.md")
    markdown = (tmp_path / "results.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert rows[-1].startswith("| 400 |") and "⚠ **no**: send lateness p99" in rows[-1]
    assert rows[-2].startswith("| 300 |") and rows[-2].endswith("| yes |")
    assert "| 123 |" in rows[-2]  # server CPU µs per frame
    assert "fell behind at 400 calls" in markdown and "**Capacity**" in markdown
