"""The live end-of-turn bench: talking callers and echo calls on a real server, scored."""

from __future__ import annotations

import os
from pathlib import Path

from bench.end_of_turn_live import live_load


def test_a_live_run_scores_the_turns_and_times_the_media_loop(tmp_path: Path) -> None:
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    row = live_load(
        "smart-turn",
        1,
        echo_calls=1,
        recordings=1,  # JFK's sentence: three pauses inside, one end
        log=tmp_path / "server.log",
        generator_cpu=cpu,
    )
    assert os.sched_getaffinity(0) == before  # the callers' pinning is undone
    assert row["turn"] == "smart-turn" and row["pauses"] == 3 and row["missed"] == 0
    premature = row["premature"]
    assert isinstance(premature, int) and 0 <= premature <= 3
    # The server counted at least the turns the caller heard end (the premature ones and the
    # real end; a cut pause may be decided more than once), and the model answered questions.
    by = [row[k] for k in ("by_model", "by_max_silence", "by_fallback", "by_unsure")]
    assert all(isinstance(n, int) for n in by)
    assert sum(by) >= premature + 1  # type: ignore[arg-type]
    answered = row["answered"]
    assert isinstance(answered, int) and answered >= 1
    latency = row["latency_p50_ms"]
    assert isinstance(latency, float) and 0 < latency <= 1500
    rtt = row["echo_rtt_p99_ms"]
    assert isinstance(rtt, float) and rtt > 0
