"""``voice-engine bench`` in a tiny configuration: outputs well-formed, figures sane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.procs import start_server
from bench.scenarios import barge_in, turn_latency
from conftest import ROOT, sentences, spoken

PNG = b"\x89PNG\r\n\x1a\n"


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    result = bench(
        "--calls", "1,3", "--duration", "2", "--no-turns", "--burst", "4", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    return out


def test_the_report_folder_holds_json_markdown_and_plots(tiny_run: Path) -> None:
    result = json.loads((tiny_run / "results.json").read_text())
    assert result["config"]["sweep"] == [1, 3]
    # The default server: no tuning flags, admission on.
    assert result["config"]["server_args"] == ["--pipeline", "echo"]
    assert set(result["versions"]) >= {"python", "trio", "wsproto"}
    markdown = (tiny_run / "results.md").read_text()
    assert "| 1 |" in markdown and "| 3 |" in markdown and "Capacity" in markdown
    assert "Bound met" in markdown and "## Burst" in markdown
    for name in ("rtt_cdf.png", "p99_cpu.png"):
        assert (tiny_run / name).read_bytes()[:8] == PNG
    # The per-step plot exists exactly when some step was sampled.
    assert (tiny_run / "frame_steps.png").exists() is bool(result["frame_steps"])


def test_every_frame_is_accounted_for_and_the_figures_are_sane(tiny_run: Path) -> None:
    result = json.loads((tiny_run / "results.json").read_text())
    for step in result["frame_round_trip"]:
        # 2 s of 20 ms frames per call, each echoed or lost; at this load none is lost.
        assert step["frames_sent"] == step["calls"] * 100
        assert step["lost"] == 0 and step["mismatched"] == 0 and step["failed_calls"] == 0
        assert 0 < step["p50_ms"] <= step["p95_ms"] <= step["p99_ms"] <= step["max_ms"]
        cdf = step["cdf_ms"]
        assert len(cdf) == 201 and cdf == sorted(cdf) and cdf[-1] == pytest.approx(step["max_ms"])
        assert 0 < step["server_cpu_percent"] < 100
        assert step["server_cpu_us_per_frame"] > 0 and step["server_cpu_s_per_call_minute"] > 0
        assert step["generator_lateness_p99_ms"] is not None
        assert step["late"] <= step["frames_sent"]
        assert step["p50_ms"] <= step["p90_ms"] <= step["p99_ms"] <= step["p999_ms"]
        # The default server's ceiling, read from its /metrics after each step.
        assert step["ceiling"] >= 1 and step["refused_calls"] == 0
    assert result["capacity"] in (None, 1, 3)
    bound = result["capacity_bound"]
    assert bound["kind"] in ("latency", "loss", "failures", "admission", "generator", "sweep")
    assert (bound["kind"] == "sweep") is (result["capacity"] == 3)
    # The server's own sampled step timings: what was sampled, and why the rest is absent
    # (echo decodes no μ-law and has no turn detector).
    steps, absent = result["frame_steps"], result["frame_steps_missing"]
    assert set(steps) | set(absent) == {"decode", "vad", "stage", "encode", "socket", "round-trip"}
    assert not set(steps) & set(absent) and {"decode", "vad"} <= set(absent)
    for step in steps.values():
        assert step["samples"] == sum(step["counts"]) > 0
        assert step["p50_us"] <= step["p99_us"]
    markdown = (tiny_run / "results.md").read_text()
    assert "- decode: no μ-law was decoded" in markdown


def test_the_burst_admits_refuses_and_counts_on_both_sides(tiny_run: Path) -> None:
    burst = json.loads((tiny_run / "results.json").read_text())["burst"]
    assert burst["offered"] == 4 and burst["failed"] == 0 and burst["errors"] == []
    assert burst["admitted"] + burst["refused"] == 4 and burst["ceiling"] >= 1
    assert burst["admitted"] == min(4, burst["ceiling"]) == burst["metrics_admitted"]
    assert burst["frames_sent"] == burst["admitted"] * 100 and burst["lost"] == 0


def test_compare_prints_ratios_against_an_earlier_run(tiny_run: Path, tmp_path: Path) -> None:
    again = bench(
        "--calls",
        "1",
        "--duration",
        "2",
        "--no-turns",
        "--out",
        str(tmp_path),
        "--compare",
        str(tiny_run / "results.json"),
    )
    assert again.returncode == 0, again.stderr
    ratios = [line for line in again.stdout.splitlines() if line.startswith("rtt[1].p50_ms")]
    assert len(ratios) == 1 and "×" in ratios[0]


def test_turn_latency_and_barge_in_are_measured_on_real_speech(tmp_path: Path) -> None:
    server = start_server("turn-echo", cpu=None, log=tmp_path / "log")
    try:
        clip = spoken(sentences()[2])
        turns = turn_latency(server, [clip], 500)
        reaction = barge_in(server, spoken(sentences()[0]) + clip, spoken(sentences()[1]), 1)
    finally:
        assert server.stop() == 0
    # A reply comes, about one hangover after the end of speech (the detector's end of speech
    # and this energy-threshold truth may differ by a frame or a few).
    assert len(turns.sent_ms) == 1 and 400 <= turns.sent_ms[0] <= 1500
    assert turns.heard_ms[0] >= turns.sent_ms[0] - 20
    # The clear follows the onset of the caller's speech, within the detector's start window
    # plus transport (generous: this is a functional check, the bench reports the number).
    assert len(reaction.reaction_ms) == 1 and 0 < reaction.reaction_ms[0] < 500


def test_turn_taking_replay_and_live_are_well_formed_and_add_up(tmp_path: Path) -> None:
    from dataclasses import asdict

    from bench.report import figures, write_markdown
    from bench.turn_taking import GOALS, live, run_replay
    from engine.media.vad import TurnConfig

    config = TurnConfig()
    taking = run_replay(3, 6.0, config, [300, config.hangover_ms, 800])
    assert [r.hangover_ms for r in taking.replay_speech] == [300, config.hangover_ms, 800]
    for run in taking.replay_speech:
        assert run.sentences == 3 and run.pauses == 6
        # Every sentence is ended once after its end, plus the premature decisions inside it.
        assert run.missed == 0 and run.decisions == run.sentences + run.premature
        assert run.premature <= run.pauses
        # The replay decides exactly one hangover after the end of speech.
        assert run.latency_ms == [float(run.hangover_ms)] * run.sentences
    # A hangover longer than every pause ends no sentence early.
    assert taking.replay_speech[-1].premature == 0
    assert [n.noise for n in taking.replay_noise] == ["babble", "street", "fan"]
    assert all(n.seconds == 6.0 and n.false_barge_ins is None for n in taking.replay_noise)

    server = start_server(
        "bench.probe:create", cpu=None, log=tmp_path / "log", hangover_ms=800, turn="vad"
    )
    try:
        live(
            server,
            taking,
            hangover_ms=800,
            sentences=1,
            noise_listen_s=1.0,
            noise_talk_s=1.5,
            onset_trials=1,
        )
    finally:
        assert server.stop() == 0
    (speech,) = taking.live_speech
    # Live: one sentence, no pause reaches 800 ms, so one decision, about a hangover after the
    # end (the emulator sends a frame at its start, so up to a frame early; plus transport).
    assert (speech.decisions, speech.premature, speech.missed) == (1, 0, 0)
    assert 800 - 60 <= speech.latency_ms[0] <= 800 + 200
    assert len(taking.live_noise) == 3
    for noise in taking.live_noise:
        assert noise.false_barge_ins is not None and noise.false_barge_ins <= noise.false_starts
        assert 1.0 <= noise.barge_in_seconds <= 1.6  # the bot did talk over the noise
    # The clear follows the onset of real speech (functional check; the bench reports it).
    assert len(taking.onset_to_clear_ms) == 1 and 0 < taking.onset_to_clear_ms[0] < 200

    result = json.loads(json.dumps({"turn_taking": asdict(taking)}))
    assert result["turn_taking"]["goals"] == GOALS
    named = figures({"frame_round_trip": [], **result})
    assert named["turn_taking.live.premature_share[800]"] == 0.0
    assert "turn_taking.onset_to_clear.p50" in named
    result |= {
        "config": {"when": "now", "server_cpu": 0, "generator_cpu": 1},
        "machine": {"cpu_model": "test"},
        "versions": {},
        "frame_round_trip": [],
    }
    write_markdown(result, tmp_path / "results.md")
    markdown = (tmp_path / "results.md").read_text()
    assert "## Turn-taking quality" in markdown
    assert "| live | 800 ms | 1 | 1 | 0 | 0.0% |" in markdown
    assert "| fan | live |" in markdown and "goal ≤ 40 ms" in markdown
