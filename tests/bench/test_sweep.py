"""The capacity search's bound: which one it met, and when the sweep stops (pure: no server)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench.report import write_markdown
from bench.scenarios import RttStep, as_dict, capacity, generator_limit
from bench.sweep import capacity_bound, step_line, stop_reason


def step(calls: int, **changes: object) -> RttStep:
    base = RttStep(
        calls=calls,
        duration_s=5.0,
        frames_sent=calls * 250,
        lost=0,
        late=0,
        mismatched=0,
        failed_calls=0,
        refused_calls=0,
        p50_ms=1.0,
        p95_ms=2.0,
        p99_ms=3.0,
        max_ms=4.0,
        cdf_ms=[1.0] * 201,
        server_cpu_percent=50.0,
        server_cpu_s_per_call_minute=0.1,
        server_rss_mb=100.0,
        rss_per_call_kb=10.0,
        server_cpu_us_per_frame=90.0,
        generator_cpu_percent=40.0,
        generator_lateness_p99_ms=0.5,
        generator_lateness_max_ms=2.0,
        generator_late=False,
        generator_late_reasons=[],
        peak_calls=calls,
        admitted_calls=calls,
        p90_ms=2.5,
        p999_ms=3.5,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def refused_at(calls: int, ceiling: int, *, p99: float = 3.0) -> RttStep:
    return step(
        calls,
        refused_calls=calls - ceiling,
        admitted_calls=ceiling,
        refusals={"reject:busy": calls - ceiling},
        ceiling=ceiling,
        metrics_refused={"call-ceiling": float(calls - ceiling)},
        frames_sent=ceiling * 250,
        p99_ms=p99,
    )


def test_admission_refusals_are_the_ceiling_not_a_failure_of_the_server() -> None:
    steps = [step(50), step(100), refused_at(150, 143)]
    bound = capacity_bound(steps)
    assert capacity(steps) == 100
    assert (bound.kind, bound.at_calls, bound.ceiling) == ("admission", 150, 143)
    assert "admitted 143 and refused 7 (reject:busy 7)" in bound.detail
    assert "its ceiling of 143 calls" in bound.detail and "met the goal" in bound.detail
    assert steps[-1].admitted_healthy and not steps[-1].healthy
    assert stop_reason(steps[-1]) == "admission refused calls"
    slow = capacity_bound([step(50), refused_at(150, 143, p99=40.0)])
    assert "did not meet the goal" in slow.detail


@pytest.mark.parametrize(
    ("bad", "kind", "words"),
    [
        ({"p99_ms": 25.0}, "latency", "p99 was 25.0 ms"),
        ({"lost": 3}, "loss", "3 frames were lost"),
        ({"mismatched": 2}, "loss", "2 came back altered"),
        ({"failed_calls": 2, "errors": ["boom"]}, "failures", "2 calls failed: boom"),
        (
            {"generator_late": True, "generator_late_reasons": ["CPU share 95% > 85%"]},
            "generator",
            "fell behind at 200 calls (CPU share 95% > 85%)",
        ),
    ],
)
def test_each_bound_is_named_with_what_met_it(
    bad: dict[str, object], kind: str, words: str
) -> None:
    steps = [step(100), step(200, **bad)]
    bound = capacity_bound(steps)
    assert (bound.kind, bound.at_calls) == (kind, 200) and words in bound.detail
    assert capacity(steps) == 100


def test_a_sweep_that_met_the_goal_throughout_says_so() -> None:
    assert capacity_bound([step(1), step(10)]).kind == "sweep"
    assert capacity_bound([]).kind == "none"
    # A healthy step above an unhealthy one: the bound is the first failure above capacity.
    steps = [step(10, p99_ms=30.0), step(50), step(100, lost=1)]
    assert capacity(steps) == 50 and capacity_bound(steps).at_calls == 100


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"p99_ms": 30.0}, None),  # past the knee, but the curve goes on
        ({"p99_ms": 1500.0}, "far past the knee"),
        ({"failed_calls": 60}, "far past the knee"),
        ({"lost": 13000}, "far past the knee"),
        ({"generator_late": True}, "generator late"),
    ],
)
def test_when_the_sweep_stops(changes: dict[str, object], reason: str | None) -> None:
    assert stop_reason(step(100, **changes)) == reason


def test_every_row_and_line_carries_the_servers_cost_and_the_generators_lateness(
    tmp_path: Path,
) -> None:
    steps = [step(100), refused_at(150, 143)]
    line = step_line(steps[1])
    assert "7 refused (ceiling 143)" in line and "90 µs/frame" in line
    assert "0.10 CPU s/call-min" in line and "late p99 0.5 ms, CPU 40 %" in line
    result = {
        "config": {"when": "now", "server_cpu": 0, "generator_cpu": 1, "server_args": ["x"]},
        "machine": {"cpu_model": "test"},
        "versions": {},
        "frame_round_trip": as_dict(steps),
        "capacity": capacity(steps),
        "capacity_bound": capacity_bound(steps).as_dict(),
        "capacity_generator_limit": generator_limit(steps),
    }
    write_markdown(json.loads(json.dumps(result)), tmp_path / "results.md")
    markdown = (tmp_path / "results.md").read_text()
    row = next(r for r in markdown.splitlines() if r.startswith("| 150 |"))
    assert "| 7 (143) |" in row and "| 90 |" in row and "| 0.10 |" in row
    assert "| 40 % | 0.5 / 2.0 ms |" in row
    assert "**Bound met: admission**" in markdown


def test_a_target_without_known_processes_reports_no_server_cost(tmp_path: Path) -> None:
    unknown = step(
        10,
        server_cpu_percent=None,
        server_cpu_s_per_call_minute=None,
        server_rss_mb=None,
        rss_per_call_kb=None,
        server_cpu_us_per_frame=None,
    )
    assert "| server –, – |" in step_line(unknown)
    result = {
        "config": {"when": "now"},
        "machine": {"cpu_model": "test"},
        "versions": {},
        "target": {"label": "theirs", "url": "ws://x/y"},
        "frame_round_trip": as_dict([unknown]),
    }
    write_markdown(json.loads(json.dumps(result)), tmp_path / "results.md")
    row = next(r for r in (tmp_path / "results.md").read_text().splitlines() if "| 10 |" in r)
    assert row.split(" | ").count("–") == 4  # server CPU, µs / frame, per call-min, RSS
