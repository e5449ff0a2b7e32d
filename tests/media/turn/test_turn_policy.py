"""The sans-IO end-of-turn policy, fed recorded speech frame by frame (no model: answers are
given by the test)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from turn_clips import clip, frames, silence, truth

from engine.media.frames import SpeechStarted, Utterance
from engine.media.turn.policy import (
    EndOfTurn,
    EndOfTurnPolicy,
    PolicyConfig,
    PolicyEvent,
    Question,
    Rung,
    text_incomplete,
)
from engine.media.vad import TurnConfig, TurnDetector

SENTENCE = "austen_0870"  # one sentence, 6.6 s, no pause inside


def play(
    policy: EndOfTurnPolicy, pcm: np.ndarray, start_ms: int = 0
) -> list[tuple[int, PolicyEvent]]:
    out = []
    for k, frame in enumerate(frames(pcm)):
        now = start_ms + 20 * k
        out += [(now + 20, e) for e in policy.feed(frame, now)]
    return out


def speech_end_ms(name: str) -> int:
    return round(truth()[name]["speech"][1] * 1000)


def test_vad_only_ends_after_its_hangover_and_asks_nothing() -> None:
    policy = EndOfTurnPolicy(PolicyConfig(schedule=(), fallback_hangover_ms=500))
    events = play(policy, np.concatenate((clip(SENTENCE), silence(1500))))
    assert [type(e) for _, e in events] == [SpeechStarted, EndOfTurn]
    ((t, end),) = [(t, e) for t, e in events if isinstance(e, EndOfTurn)]
    assert isinstance(end, EndOfTurn) and end.reason == "vad"
    assert end.speech_ended.timestamp + 500 == end.decided_at == t
    assert abs(end.speech_ended.timestamp - speech_end_ms(SENTENCE)) <= 200
    assert policy.questions == 0


def test_questions_follow_the_schedule_and_max_silence_ends() -> None:
    config = PolicyConfig(schedule=(Rung(200, 0.9), Rung(500, 0.6)), max_silence_ms=900)
    policy, first = _pause_question(config)
    assert first.silence_ms == 200
    events = play(policy, silence(200), start_ms=policy.now)
    assert not events  # the question is pending: the 500 ms rung passes without a new one...
    assert policy.answer(first.id, 0.1) == ()
    events = play(policy, silence(1000), start_ms=policy.now)
    kinds = [type(e) for _, e in events]
    assert kinds == [Question, EndOfTurn]  # ...so the next rung's question comes at once
    (end,) = [e for _, e in events if isinstance(e, EndOfTurn)]
    assert end.reason == "max_silence" and end.decided_at - end.speech_ended.timestamp == 900


def _pause_question(config: PolicyConfig) -> tuple[EndOfTurnPolicy, Question]:
    """A policy fed the sentence up to its first question (in the pause after it)."""
    policy = EndOfTurnPolicy(config)
    for k, frame in enumerate(frames(np.concatenate((clip(SENTENCE), silence(500))))):
        for event in policy.feed(frame, 20 * k):
            if isinstance(event, Question):
                return policy, event
    raise AssertionError("no question")


def test_an_answer_over_the_threshold_ends_the_turn_with_all_its_audio() -> None:
    policy, question = _pause_question(PolicyConfig())
    assert question.silence_ms == 300  # the default schedule's first rung
    assert 6000 * 8 <= len(question.audio) <= 8000 * 8  # the turn so far, at most 8 s
    assert question.asked_at == policy.now
    (end,) = policy.answer(question.id, 0.95)
    assert isinstance(end, EndOfTurn) and end.reason == "model" and end.probability == 0.95
    assert end.utterance.end - end.utterance.start == end.utterance.duration_ms
    assert end.utterance.duration_ms >= 6000  # the whole sentence, not only the last 8 s
    assert not policy.in_turn


def test_an_answer_under_the_threshold_waits_and_a_later_rung_asks_again() -> None:
    config = PolicyConfig(schedule=(Rung(200, 0.9), Rung(500, 0.6)))
    policy, question = _pause_question(config)
    assert policy.answer(question.id, 0.7) == ()  # under 0.9 at 200 ms
    events = play(policy, silence(400), start_ms=policy.now)
    again = [e for _, e in events if isinstance(e, Question)]
    assert [q.silence_ms for q in again] == [500]
    (end,) = policy.answer(again[0].id, 0.7)  # over 0.6 at 500 ms
    assert isinstance(end, EndOfTurn) and end.reason == "model"


def test_stale_answers_are_ignored() -> None:
    policy, question = _pause_question(PolicyConfig())
    assert policy.answer(question.id + 1, 1.0) == ()
    play(policy, clip(SENTENCE)[:8000], start_ms=policy.now)  # the caller speaks again
    assert policy.answer(question.id, 1.0) == ()
    assert policy.in_turn


def test_a_failed_question_falls_back_to_the_vad_rule_for_the_turn() -> None:
    config = PolicyConfig(fallback_hangover_ms=500, max_silence_ms=1200)
    policy, question = _pause_question(config)
    assert policy.answer(question.id, None) == ()
    events = play(policy, silence(600), start_ms=policy.now)
    ends = [e for _, e in events if isinstance(e, EndOfTurn)]
    assert len(ends) == 1 and ends[0].reason == "fallback"
    assert ends[0].decided_at - ends[0].speech_ended.timestamp == 500
    assert not [e for _, e in events if isinstance(e, Question)]
    assert policy.fallback_turns == 1


def test_text_cue_caps_the_probability() -> None:
    policy, question = _pause_question(PolicyConfig())
    policy.set_transcript("how much there might be prudently in his power to do for")
    assert policy.answer(question.id, 0.99) == ()
    policy2, question2 = _pause_question(PolicyConfig(text_cap=1.0))
    policy2.set_transcript("how much there might be prudently in his power to do for")
    assert len(policy2.answer(question2.id, 0.99)) == 1


def test_words_noted_while_no_turn_is_open_are_not_kept() -> None:
    policy = EndOfTurnPolicy(PolicyConfig())
    policy.set_transcript("to do for")  # a late partial of a turn already over
    for k, frame in enumerate(frames(np.concatenate((clip(SENTENCE), silence(500))))):
        questions = [e for e in policy.feed(frame, 20 * k) if isinstance(e, Question)]
        if questions:
            assert questions[0].transcript is None
            assert len(policy.answer(questions[0].id, 0.99)) == 1  # no text cue in the way
            return
    raise AssertionError("no question")


@pytest.mark.parametrize(
    ("text", "incomplete"),
    [
        ("i would like to book a table", False),
        ("i would like to book a table,", True),
        ("ask not what your country can do for", True),
        ("and so my fellow americans and", True),
        ("the weather here is nice", False),
        ("that's where the international airport is", False),
        ("could you log me in", False),
        ("uh", True),
        ("my flight lands in chicago at the", True),
        ("", False),
        (None, False),
    ],
)
def test_text_incomplete(text: str | None, incomplete: bool) -> None:
    assert text_incomplete(text) is incomplete


def test_a_turn_resumed_soon_after_an_end_keeps_the_previous_audio_as_context() -> None:
    for context_ms, expect_context in ((2000, True), (0, False)):
        policy, question = _pause_question(PolicyConfig(context_ms=context_ms))
        policy.answer(question.id, 0.99)  # ended (a cut-in, as it will turn out)
        events = play(policy, np.concatenate((clip("austen_0930"), silence(200))), policy.now)
        assert isinstance(events[0][1], SpeechStarted)
        second = next(e for _, e in events if isinstance(e, Question))
        if expect_context:  # the window reaches back across the cut-in: a full 8 s
            assert len(second.audio) == 8000 * 8
        else:
            assert len(second.audio) < 4000 * 8
        (end,) = policy.answer(second.id, 0.99)
        assert isinstance(end, EndOfTurn) and end.resumed is expect_context
        assert end.utterance.duration_ms < 4000  # the utterance itself is the new turn only


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="increasing"):
        PolicyConfig(schedule=(Rung(500, 0.5), Rung(200, 0.9)))
    with pytest.raises(ValueError, match="max_silence"):
        PolicyConfig(schedule=(Rung(200, 0.5),), max_silence_ms=100)
    with pytest.raises(ValueError, match="thresholds"):
        replace(PolicyConfig(), schedule=(Rung(200, 1.5),))
    with pytest.raises(ValueError, match="unsure_after"):
        PolicyConfig(unsure_after=-1)


def _ends_when_every_question_fails(pcm: np.ndarray, config: PolicyConfig) -> list[int]:
    policy = EndOfTurnPolicy(config)
    ends = []
    for k, frame in enumerate(frames(pcm)):
        events = list(policy.feed(frame, 20 * k))
        for event in list(events):
            if isinstance(event, Question):
                events += policy.answer(event.id, None)
        ends += [e.decided_at for e in events if isinstance(e, EndOfTurn)]
    return ends


def _vad_ends(pcm: np.ndarray, config: TurnConfig) -> list[int]:
    detector = TurnDetector(config)
    return [
        20 * k + 20
        for k, frame in enumerate(frames(pcm))
        for event in detector.process(frame, 20 * k)
        if isinstance(event, Utterance)
    ]


@pytest.mark.parametrize(
    ("name", "vad_ends", "segmenter_ends"),
    [
        ("austen_0870", [7580], [7120]),
        ("ve9qrp", [22140], [5400, 10300, 22140]),  # breaths and line noise in its pauses
        ("jfk", [2620, 4800, 8020, 11500], [2620, 4800, 8020, 10680, 11500]),
    ],
)
def test_with_the_vad_rule_a_turn_that_falls_back_ends_as_on_the_plain_vad(
    name: str, vad_ends: list[int], segmenter_ends: list[int]
) -> None:
    pcm = np.concatenate((clip(name), silence(1500)))
    rule = TurnConfig(hangover_ms=500)
    config = PolicyConfig(max_silence_ms=3000)
    assert _vad_ends(pcm, rule) == vad_ends
    assert _ends_when_every_question_fails(pcm, replace(config, vad_rule=rule)) == vad_ends
    # Without it, the fallback counts 500 ms of the segmenter's stricter silence.
    assert _ends_when_every_question_fails(pcm, config) == segmenter_ends


def _turns(config: PolicyConfig, answers: list[float]) -> list[EndOfTurn]:
    """The sentence said once per answer, 1.5 s of silence after each; every question of turn
    k answered at once with ``answers[k]``."""
    policy = EndOfTurnPolicy(config)
    ends: list[EndOfTurn] = []
    turn = np.concatenate((clip(SENTENCE), silence(1500)))
    for k, frame in enumerate(frames(np.concatenate([turn] * len(answers)))):
        pending = list(policy.feed(frame, 20 * k))
        while pending:
            event = pending.pop(0)
            if isinstance(event, Question):
                pending += policy.answer(event.id, answers[len(ends)])
            elif isinstance(event, EndOfTurn):
                ends.append(event)
    return ends


def test_a_voice_the_model_is_never_sure_of_falls_to_the_vad_rule_for_the_rest_of_the_call() -> (
    None
):
    config = PolicyConfig(fallback_hangover_ms=500, max_silence_ms=1200)
    ends = _turns(config, [0.1, 0.1, 0.1, 0.95, 0.1])
    assert [e.reason for e in ends] == ["max_silence", "max_silence", "unsure", "model", "unsure"]
    waited = [e.decided_at - e.speech_ended.timestamp for e in ends]
    assert waited[:2] == [1200, 1200] and waited[2] == waited[4] == 500
    assert waited[3] == 300  # the model still ends a turn sooner when it is sure


@pytest.mark.parametrize(
    ("unsure_after", "answers", "reasons"),
    [
        (0, [0.1] * 4, ["max_silence"] * 4),  # off
        (1, [0.1, 0.1], ["max_silence", "unsure"]),
        # a turn the model ends before the call is unsure starts the count again
        (
            2,
            [0.1, 0.95, 0.1, 0.1, 0.1],
            ["max_silence", "model", "max_silence", "max_silence", "unsure"],
        ),
    ],
)
def test_unsure_after_counts_turns_in_a_row_that_ran_to_the_limit(
    unsure_after: int, answers: list[float], reasons: list[str]
) -> None:
    ends = _turns(PolicyConfig(unsure_after=unsure_after), answers)
    assert [e.reason for e in ends] == reasons
