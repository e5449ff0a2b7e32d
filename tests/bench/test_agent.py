"""A voice agent measured from the caller's side: the analysis of one call's record against the
script's truth (pure, with replies played on the same clock as the generator's), and a live run
against the engine's ``turn-echo``."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest

from bench.agent import Script, agent_script, agent_step, analyze_call
from bench.procs import start_server
from engine.testing import speech_bounds

# Two utterances: 1.0–3.0 s and 6.0–8.0 s of a 10 s call.
SCRIPT = Script(b"", [(1000, 3000), (6000, 8000)])


def record(
    replies: list[tuple[float, int, int]],
    clears: tuple[float, ...] = (),
    *,
    late_ms: float = 0.0,
) -> dict[str, Any]:
    """A call's record: ``replies`` are (arrival ms, bytes, sound offset ms) messages, played
    as the generator's playback clock plays them (in order; a clear drops what is queued)."""
    heard, play_end = [], 0.0
    pending = sorted(clears)
    for arrival, size, _ in replies:
        while pending and pending[0] <= arrival:
            play_end = min(play_end, pending.pop(0))
        start = max(arrival, play_end)
        heard.append(start)
        play_end = start + size / 8
    return {
        "sent_ms": [i * 20 + late_ms for i in range(500)],
        "reply_ms": [a for a, _, _ in replies],
        "heard_ms": heard,
        "reply_bytes": [b for _, b, _ in replies],
        "sound_ms": [s for _, _, s in replies],
        "clears_ms": list(clears),
    }


def frames(start: float, count: int, *, every: float = 20.0, sound: int = 0) -> list[Any]:
    """``count`` 20 ms reply frames arriving from ``start``, ``every`` ms apart."""
    return [(start + i * every, 160, sound) for i in range(count)]


def test_a_reply_after_the_end_of_speech_is_the_turn_latency_sent_and_heard() -> None:
    turns = analyze_call(SCRIPT, record(frames(3500, 50)))
    assert turns.turn_sent_ms == [500] and turns.turn_heard_ms == [500]
    assert turns.no_reply == 1  # the second utterance got nothing
    assert turns.premature == 0 and turns.barge_in_ms == [] and turns.greeting_ms is None


def test_audio_sent_ahead_plays_in_order_and_leading_silence_is_not_heard_as_a_reply() -> None:
    # 10 silent frames then 40 with sound, all sent at once at 3.4 s: the first sound
    # arrives with them and plays 200 ms later.
    burst = [(3400.0, 160, -1)] * 10 + [(3400.0, 160, 0)] * 40
    turns = analyze_call(SCRIPT, record(burst))
    assert turns.turn_sent_ms == [400] and turns.turn_heard_ms == [600]
    # Sound 5 ms into a 40 ms message: heard from there.
    turns = analyze_call(SCRIPT, record([(3300.0, 320, 5), *frames(3340, 20)]))
    assert turns.turn_sent_ms == [300] and turns.turn_heard_ms == [305]


def test_a_send_lateness_shifts_the_truth_with_the_frames() -> None:
    turns = analyze_call(SCRIPT, record(frames(3500, 50), late_ms=3.0))
    assert turns.turn_sent_ms == [497]


def test_a_barge_in_is_timed_to_the_clear_and_the_new_turn_is_measured() -> None:
    # The reply to the first utterance: 4 s of audio sent at once at 3.5 s (plays to 7.5 s);
    # the caller speaks again at 6.0 s; the agent clears at 6.03 s and answers at 8.6 s.
    reply = [(3500.0, 32000, 0)]
    turns = analyze_call(SCRIPT, record([*reply, *frames(8600, 10)], clears=(6030.0,)))
    assert turns.barge_in_ms == [30] and turns.barge_ins_ignored == 0
    assert turns.turn_sent_ms == [500, 600] and turns.premature == 0


def test_an_agent_that_talks_on_over_the_caller_ignored_the_barge_in() -> None:
    turns = analyze_call(SCRIPT, record([(3500.0, 32000, 0)]))
    assert turns.barge_in_ms == [] and turns.barge_ins_ignored == 1
    # A reply that ends by itself soon after the onset was not a barge-in to honour.
    turns = analyze_call(SCRIPT, record([(3500.0, 20400, 0)]))  # plays to 6.05 s
    assert turns.barge_in_ms == [] and turns.barge_ins_ignored == 0


def test_talking_while_the_caller_is_mid_sentence_is_a_premature_reply() -> None:
    # The agent speaks at 2.0 s, inside the first utterance, then answers properly at 3.5 s.
    turns = analyze_call(SCRIPT, record([*frames(2000, 10), *frames(3500, 10)]))
    assert turns.premature == 1 and turns.turn_sent_ms == [500]
    # One continuous spurt that began mid-sentence and runs past its end: premature, no reply.
    turns = analyze_call(SCRIPT, record(frames(2500, 100)))
    assert turns.premature == 1 and turns.turn_sent_ms == [] and turns.no_reply == 2


def test_sound_before_the_caller_speaks_is_a_greeting() -> None:
    turns = analyze_call(SCRIPT, record([*frames(200, 20), *frames(3500, 10)]))
    assert turns.greeting_ms == 200 and turns.turn_sent_ms == [500] and turns.premature == 0


def test_a_call_cut_short_measures_only_what_was_said() -> None:
    cut = record(frames(3500, 10))
    cut["sent_ms"] = cut["sent_ms"][:300]  # 6 s: the second utterance never ended
    turns = analyze_call(SCRIPT, cut)
    assert turns.turn_sent_ms == [500] and turns.no_reply == 0


def test_the_script_alternates_long_and_short_gaps_around_real_speech() -> None:
    script = agent_script(3)
    assert len(script.utterances) == 3 and len(script.ulaw) % 160 == 0
    (s1, e1), (s2, e2), (s3, e3) = script.utterances
    assert s1 >= 1500 and s2 - e1 >= 5000 and 1500 <= s3 - e2 < 2000
    # The truth is where the speech is: the audio of each utterance, by frame energy.
    for start, end in script.utterances:
        onset, stop = speech_bounds(script.ulaw[(start - 100) * 8 : (end + 100) * 8])
        assert abs(onset + start - 100 - start) <= 20 and abs(stop + start - 100 - end) <= 20
    assert script.pauses and all(s1 < a < b < e3 for a, b in script.pauses)


def test_the_engines_turn_echo_answers_each_turn_and_honours_barge_in(tmp_path: Path) -> None:
    server = start_server("turn-echo", cpu=None, log=tmp_path / "log")
    try:
        step = agent_step(
            server.endpoint,
            1,
            agent_script(3),
            audio=tmp_path / "script.ulaw",
            generator_cpu=None,
        )
    finally:
        assert server.stop() == 0
    assert step.failed_calls == 0 and step.errors == [] and step.utterances == 3
    # turn-echo replays each utterance when its turn ends: by default when Smart Turn says so,
    # from 300 ms of silence on and by 1.2 s at the latest (functional bounds); its reply leads
    # with 200 ms of pre-roll, heard after sent.
    assert step.replies + step.no_reply == 3 and step.replies >= 2
    assert all(280 <= ms <= 1500 for ms in step.turn_sent_ms), step
    for sent, heard in zip(step.turn_sent_ms, step.turn_heard_ms, strict=True):
        assert heard >= sent
    # The third sentence starts 1.5 s after the second: over its replay, which is cut.
    assert step.barge_ins >= 1 and step.barge_ins_ignored == 0 and step.clears >= 1
    assert all(0 < ms < 500 for ms in step.barge_in_ms)
    assert step.server_cpu_percent is not None and step.marks_echoed > 0
    assert step.percentile("turn_sent_ms", 50) == pytest.approx(
        statistics.median(step.turn_sent_ms)
    )
