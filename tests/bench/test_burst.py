"""The burst: N callers at once; admission admits up to its ceiling and refuses the rest busy,
never fails a call; the generator and the server's /metrics agree."""

from __future__ import annotations

from pathlib import Path

from bench.burst import burst
from engine.tts import speak_ulaw


def test_the_excess_is_refused_busy_the_admitted_stream_whole_and_metrics_agree(
    tmp_path: Path,
) -> None:
    audio = tmp_path / "caller.ulaw"
    audio.write_bytes(speak_ulaw("Is there parking available near the main entrance?"))
    # A fixed ceiling stands in for the measured one (the burst runs the default server).
    run = burst(
        7,
        2.0,
        cpu=None,
        generator_cpu=None,
        log=tmp_path / "server.log",
        audio=audio,
        webhook_concurrency=2,
        extra=("--max-calls", "3"),
    )
    assert run.offered == 7 and run.server_args == ["--max-calls", "3"]
    assert (run.admitted, run.refused, run.failed) == (3, 4, 0) and run.errors == []
    assert run.refusals == {"reject:busy": 4}
    assert run.ceiling == 3 and run.metrics_admitted == 3
    assert run.metrics_refused == {"call-ceiling": 4}
    # 2 s of 20 ms frames for each admitted call, every one echoed unchanged.
    assert run.frames_sent == 3 * 100 and run.lost == 0 and run.mismatched == 0
    assert 0 < run.p50_ms <= run.p99_ms <= run.p999_ms <= run.max_ms
    assert run.healthy is (run.p99_ms < 20)
