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
    result = bench("--calls", "1,3", "--duration", "2", "--no-turns", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_the_report_folder_holds_json_markdown_and_plots(tiny_run: Path) -> None:
    result = json.loads((tiny_run / "results.json").read_text())
    assert result["config"]["sweep"] == [1, 3]
    assert set(result["versions"]) >= {"python", "trio", "wsproto"}
    markdown = (tiny_run / "results.md").read_text()
    assert "| 1 |" in markdown and "| 3 |" in markdown and "Capacity" in markdown
    for name in ("rtt_cdf.png", "p99_cpu.png"):
        assert (tiny_run / name).read_bytes()[:8] == PNG


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
        assert step["generator_lateness_p99_ms"] is not None
        assert step["late"] <= step["frames_sent"]
    assert result["capacity"] in (None, 1, 3)


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
    server = start_server("turn-echo", cpu=None, media_listener=True, log=tmp_path / "log")
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
