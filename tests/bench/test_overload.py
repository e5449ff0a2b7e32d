"""The overload run: a call ceiling of K with K + E callers, counted by both sides."""

from __future__ import annotations

from pathlib import Path

from bench.overload import overload
from engine.tts import speak_ulaw


def test_the_excess_is_refused_the_admitted_stream_and_metrics_agree(tmp_path: Path) -> None:
    audio = tmp_path / "caller.ulaw"
    audio.write_bytes(speak_ulaw("Is there parking available near the main entrance?"))
    run = overload(
        3,
        4,
        2.0,
        cpu=None,
        generator_cpu=None,
        media_listener=True,
        log=tmp_path / "server.log",
        audio=audio,
    )
    assert run.offered == 7
    assert (run.admitted, run.refused, run.failed_calls) == (3, 4, 0)
    assert (run.metrics_admitted, run.metrics_refused) == (3, 4)
    # 2 s of 20 ms frames for each admitted call, every one echoed unchanged.
    assert run.frames_sent == 3 * 100
    assert run.lost == 0 and run.mismatched == 0
    assert 0 < run.p50_ms <= run.p99_ms <= run.max_ms
