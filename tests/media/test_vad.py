"""The turn detector on real speech (eSpeak NG through μ-law), frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import sentences, spoken
from engine.demo import speech_end_ms
from engine.media.codec import ulaw_decode
from engine.media.frames import SpeechEnded, SpeechStarted, Utterance
from engine.media.vad import TurnConfig, TurnDetector, TurnEvent
from engine.testing import speech_bounds

SILENCE_MS = 600


def silence(ms: int) -> bytes:
    return b"\xff" * (ms * 8)


def speech_start_ms(ulaw: bytes) -> int:
    return speech_bounds(ulaw)[0]


def run(ulaw: bytes, config: TurnConfig | None = None, chunk: int = 160) -> list[TurnEvent]:
    detector = TurnDetector(config)
    pcm = ulaw_decode(ulaw)
    events: list[TurnEvent] = []
    for i in range(0, len(pcm) - chunk + 1, chunk):
        events.extend(detector.process(pcm[i : i + chunk], i // 8))
    return events


def test_silence_makes_no_events() -> None:
    assert run(silence(3000)) == []


@pytest.mark.parametrize("index", range(5))
def test_one_sentence_is_one_turn(index: int) -> None:
    audio = spoken(sentences()[index])
    call = silence(SILENCE_MS) + audio + silence(1000)
    onset = SILENCE_MS + speech_start_ms(audio)
    end = SILENCE_MS + speech_end_ms(audio)
    events = run(call)
    assert [type(e) for e in events] == [SpeechStarted, Utterance, SpeechEnded]
    started, utterance, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(utterance, Utterance)
    assert isinstance(ended, SpeechEnded)
    config = TurnConfig()
    # Speech is found near its true onset and decided within the start window.
    assert onset - 100 <= started.timestamp <= onset + 100
    assert 0 <= started.detected_at - started.timestamp <= config.start_window_ms
    # The utterance keeps the pre-roll before the first voiced frame, and the speech's end.
    assert utterance.start == started.timestamp - config.pre_roll_ms
    assert utterance.end >= end - 100
    assert len(utterance.pcm) == (utterance.end - utterance.start) * 8
    # Its audio is exactly the call's audio over that span.
    expected = ulaw_decode(call)[utterance.start * 8 : utterance.end * 8]
    assert np.array_equal(utterance.pcm, expected)
    assert ended.timestamp <= utterance.end


def test_a_pause_shorter_than_the_hangover_keeps_one_turn() -> None:
    a, b = spoken(sentences()[0]), spoken(sentences()[1])
    pause = silence(300)
    events = run(silence(400) + a + pause + b + silence(1000))
    assert [type(e) for e in events] == [SpeechStarted, Utterance, SpeechEnded]


def test_a_pause_longer_than_the_hangover_makes_two_turns() -> None:
    a, b = spoken(sentences()[0]), spoken(sentences()[1])
    events = run(silence(400) + a + silence(1200) + b + silence(1000))
    assert [type(e) for e in events] == [SpeechStarted, Utterance, SpeechEnded] * 2


def test_hangover_is_configurable() -> None:
    a, b = spoken(sentences()[0]), spoken(sentences()[1])
    audio = silence(400) + a + silence(400) + b + silence(1000)
    assert sum(isinstance(e, Utterance) for e in run(audio)) == 1
    short = run(audio, TurnConfig(hangover_ms=200, post_roll_ms=60))
    assert sum(isinstance(e, Utterance) for e in short) == 2


def test_the_turn_ends_a_hangover_after_the_real_end_of_speech() -> None:
    # WebRTC's VAD keeps saying "speech" for ~100–200 ms after it ends; the detector must not
    # add that to the turn: it ends a hangover after the last frame with speech energy.
    for text in sentences()[:5]:
        audio = spoken(text)
        end = SILENCE_MS + speech_end_ms(audio)
        events = run(silence(SILENCE_MS) + audio + silence(1500))
        ended = next(e for e in events if isinstance(e, SpeechEnded))
        # SpeechEnded marks the end of speech; the decision came one hangover after it.
        assert abs(ended.timestamp - end) <= 60, (text, ended.timestamp, end)


def test_odd_chunk_sizes_give_the_same_turns() -> None:
    audio = silence(400) + spoken(sentences()[2]) + silence(1000)
    whole = run(audio)
    halves = run(audio, chunk=80)
    assert [type(e) for e in halves] == [type(e) for e in whole]
    assert [getattr(e, "timestamp", None) for e in halves] == [
        getattr(e, "timestamp", None) for e in whole
    ]


def test_long_speech_is_cut_at_max_utterance() -> None:
    audio = b"".join(spoken(s) for s in sentences()[:4])
    events = run(silence(200) + audio + silence(1000), TurnConfig(max_utterance_ms=2000))
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert len(utterances) >= 2
    assert all(u.end - u.start <= 2000 for u in utterances)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"aggressiveness": 4},
        {"aggressiveness": -1},
        {"start_ms": 0},
        {"start_ms": 30},
        {"start_ms": 120, "start_window_ms": 100},
        {"hangover_ms": 0},
        {"hangover_ms": 40, "post_roll_ms": 60},
        {"pre_roll_ms": -20},
        {"max_utterance_ms": 15},
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        TurnConfig(**kwargs)
