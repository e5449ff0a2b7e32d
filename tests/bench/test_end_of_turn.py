"""The end-of-turn benchmark's real material and its replay (the VAD rule only: no model)."""

from __future__ import annotations

from dataclasses import replace

from bench.end_of_turn import CONFIGS, replay, summarize
from bench.turn_material import TURNS, real_speech


def test_real_turns_have_their_pauses_inside_and_the_words_in_order() -> None:
    speeches = real_speech()
    assert len(speeches) == len(TURNS)
    assert sum(len(s.material.pauses) for s in speeches) == 12
    for speech in speeches:
        ((start, end),) = speech.material.sentences
        assert 2000 <= start < end < speech.material.duration_ms - 2000
        for a, b in speech.material.pauses:
            assert start < a < b < end and b - a >= 150
        times = [a for _, a, _ in speech.words]
        assert times == sorted(times) and speech.words[-1][2] == end
        assert speech.transcript(end) == " ".join(w for w, _, _ in speech.words)


def test_the_vad_rule_cuts_real_long_sentences_and_a_longer_hangover_cuts_fewer() -> None:
    speeches = real_speech()
    rows = {
        name: summarize(
            name, "real", speeches, [replay(s, CONFIGS[name], None, 0) for s in speeches]
        )
        for name in ("vad-300", "vad-700")
    }
    assert rows["vad-300"]["premature"] > rows["vad-700"]["premature"] > 0  # type: ignore[operator]
    for name, row in rows.items():
        assert row["missed"] == 0
        hangover = CONFIGS[name].fallback_hangover_ms
        latencies = row["latency_ms"]
        assert isinstance(latencies, list) and len(latencies) == len(TURNS)
        # From the aligned end of the last word; the VAD hears the voice end up to 300 ms sooner.
        assert all(hangover - 300 <= t <= hangover + 100 for t in latencies)
    never = replace(CONFIGS["vad-300"], fallback_hangover_ms=10_000, max_turn_ms=600_000)
    assert not replay(speeches[0], never, None, 0).decisions
