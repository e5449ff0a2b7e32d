"""The end-of-turn rows of ``voice-engine bench``: measured on real speech, reported and plotted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import end_of_turn_report
from bench.end_of_turn import analyzer_rows, decision_load_rows
from bench.end_of_turn_load import NOISY_CALLER_SNR_DB, _over_noise, barge_in
from bench.material import active_level, babble
from bench.report import figures, write_markdown, write_plots
from bench.turn_material import decode, real_speech
from engine.media.codec import ulaw_decode


@pytest.fixture(scope="module")
def rows() -> dict[str, Any]:
    speech = real_speech()
    eot = {
        "quality": analyzer_rows(synthetic=False, hangovers=(300, 700), answer_delay_ms=40),
        "decisions": decision_load_rows((3,), seconds=1.0),
        "barge_in_noise": barge_in({"real": speech}, seconds=20.0),
    }
    result: dict[str, Any] = json.loads(json.dumps(eot))  # as results.json holds it
    return result


def test_the_quality_rows_compare_the_vad_rule_and_smart_turn_on_real_speech(
    rows: dict[str, Any],
) -> None:
    quality = rows["quality"]
    names = [r["config"] for r in quality]
    assert names[:2] == ["vad 300 ms", "vad 700 ms"]
    assert sum("smart-turn" in n for n in names) == 3
    for row in quality:
        assert row["material"] == "real" and row["pauses"] == 12
        assert 0 <= row["premature"] <= row["pauses"] + row["sentences"]
        assert row["latency_p50_ms"] <= row["latency_p99_ms"]
    vad = {r["config"]: r for r in quality}
    # A longer hangover cuts fewer pauses and answers later: the trade the model is meant to beat.
    assert vad["vad 700 ms"]["premature"] < vad["vad 300 ms"]["premature"]
    assert vad["vad 700 ms"]["latency_p50_ms"] > vad["vad 300 ms"]["latency_p50_ms"]


def test_barge_in_rows_count_noise_starts_and_time_onsets_clean_and_in_noise(
    rows: dict[str, Any],
) -> None:
    noise = {r["variant"]: r for r in rows["barge_in_noise"]}
    assert "vad start 40 ms" in noise and "vad 40 ms, 20 dB over floor" in noise
    for row in noise.values():
        for kind in ("babble", "street", "fan"):
            assert row[f"{kind}_per_min"] >= 0
        assert row["real_missed"] == 0
        assert 0 <= row["real_onset_p50_ms"] <= 500
        assert row["over_babble_onset_p50_ms"] is not None
        assert row["over_street_onset_p50_ms"] is not None
    # Needing more voiced audio can only start later.
    slow, fast = noise["vad start 200 ms"], noise["vad start 40 ms"]
    assert slow["real_onset_p50_ms"] > fast["real_onset_p50_ms"]


def test_a_noisy_caller_speaks_ten_db_over_the_noise_which_runs_first() -> None:
    pcm = decode(real_speech()[0])
    noise = ulaw_decode(babble(len(pcm) / 8000 + 6, 2000.0, seed=3))
    mixed = _over_noise(pcm, noise)
    lead = len(mixed) - len(pcm)
    assert lead == 5000 * 8
    noise_part = mixed[:lead]
    ratio_db = 20 * np.log10(active_level(pcm) / active_level(noise_part))
    assert abs(ratio_db - NOISY_CALLER_SNR_DB) < 1.5


def test_the_report_has_the_tables_the_figures_and_a_plot(
    rows: dict[str, Any], tmp_path: Path
) -> None:
    result = {
        "config": {"when": "now", "server_cpu": 0, "generator_cpu": 1},
        "machine": {"cpu_model": "test"},
        "versions": {},
        "end_of_turn": rows,
    }
    write_markdown(result, tmp_path / "results.md")
    markdown = (tmp_path / "results.md").read_text()
    assert "## End of turn: VAD and Smart Turn" in markdown
    row = rows["quality"][0]
    assert f"| vad 300 ms | real | 12 | {row['premature']} |" in markdown
    assert "| 3 | " in markdown  # the decision-load row at 3 talking calls
    assert "| vad start 40 ms |" in markdown
    named = figures(result)
    assert named["end_of_turn[vad 300 ms, real].premature_per_pause"] == row["premature_per_pause"]
    assert "end_of_turn.barge_in[vad start 40 ms].babble_per_min" in named
    made = write_plots(result, tmp_path)
    assert made == [tmp_path / "end_of_turn.png"]
    assert made[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert end_of_turn_report.plot({}, tmp_path) is None
