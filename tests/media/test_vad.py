"""The turn detector on real speech (eSpeak NG through μ-law), frame by frame."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
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
        {"snr_db": 6.0, "hold_snr_db": 9.0},
        {"hold_snr_db": -1.0},
        {"floor_window_ms": 0},
        {"floor_window_ms": 150},
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TurnConfig(**kwargs)


# -- noise at speaking level: the noise-floor gate ----------------------------------------------


def _noise(kind: str, seconds: float, rms: float, seed: int = 0) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    n = int(seconds * 8000)
    t = np.arange(n) / 8000
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / 8000), 20.0)
        x = np.fft.irfft(spectrum / np.sqrt(f), n)
    else:  # a hum with harmonics over a little white noise
        x = 0.1 * rng.standard_normal(n)
        for k in range(1, 6):
            x += np.sin(2 * np.pi * 100 * k * t) / k
    out: npt.NDArray[np.float64] = x * (rms / np.sqrt(np.mean(x**2)))
    return out


def _ulaw(x: npt.NDArray[np.float64]) -> bytes:
    from engine.media.codec import ulaw_encode

    return ulaw_encode(np.clip(np.round(x), -32768, 32767).astype(np.int16))


def _level(ulaw: bytes) -> float:
    pcm = ulaw_decode(ulaw).astype(np.float64)
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160)
    rms = np.sqrt((frames**2).mean(axis=1))
    return float(np.sqrt((frames[rms > 300] ** 2).mean()))


@pytest.mark.parametrize("kind", ["white", "pink", "hum"])
@pytest.mark.parametrize("lead_ms", [0, 500])
def test_steady_noise_at_speaking_level_starts_at_most_one_short_turn(
    kind: str, lead_ms: int
) -> None:
    # WebRTC's VAD calls all of it speech; the detector may take the noise's onset for speech
    # once, then the floor catches up and the turn ends: one short turn, never a 30 s one.
    level = _level(spoken(sentences()[0]))
    audio = silence(lead_ms) + _ulaw(_noise(kind, 20.0, level))
    events = run(audio)
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert len(starts) <= 1, events
    config = TurnConfig()
    for u in utterances:
        assert u.end - u.start <= config.floor_window_ms + config.hangover_ms + 500
    # And the noise is not "speaking" at the end either.
    assert len(utterances) == len(starts)


def test_without_the_noise_gate_steady_noise_is_one_endless_turn() -> None:
    # The check above can fail: with the gate off (snr 0 dB), the same noise is a 30 s turn.
    level = _level(spoken(sentences()[0]))
    events = run(_ulaw(_noise("pink", 32.0, level)), TurnConfig(snr_db=0.0, hold_snr_db=0.0))
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert utterances and utterances[0].end - utterances[0].start == 30_000


@pytest.mark.parametrize("snr_db", [20, 30])
def test_speech_over_a_steady_noise_bed_is_one_turn(snr_db: int) -> None:
    audio = spoken(sentences()[3])
    pcm = ulaw_decode(silence(2000) + audio + silence(1500)).astype(np.float64)
    bed = _noise("pink", len(pcm) / 8000, _level(audio) / 10 ** (snr_db / 20), seed=3)
    events = run(_ulaw(pcm + bed))
    # The bed's own onset at 0 ms may start one short turn (see above); the sentence is the next.
    if events and isinstance(events[1], Utterance) and events[1].end < 2000:
        events = events[3:]
    assert [type(e) for e in events] == [SpeechStarted, Utterance, SpeechEnded]
    started = events[0]
    assert isinstance(started, SpeechStarted)
    onset = 2000 + speech_start_ms(audio)
    assert onset - 100 <= started.timestamp <= onset + 100


@pytest.mark.parametrize("index", range(5))
def test_speech_is_declared_on_its_second_voiced_frame(index: int) -> None:
    # 40 ms of voice within 100 ms starts speech, so a barge-in's clear can go out within 40 ms.
    audio = spoken(sentences()[index])
    started = next(e for e in run(silence(SILENCE_MS) + audio) if isinstance(e, SpeechStarted))
    assert started.detected_at - started.timestamp == 20
