"""Turn-taking quality: ends of turn inside sentences, false starts and barge-ins on noise.

Two measurements of the same detector (:class:`engine.media.vad.TurnDetector`, sans-IO and
deterministic, so both see the same decisions for the same frames):

- **replay** (:func:`replay_speech`, :func:`replay_noise`): the material fed frame by frame, in
  process, at several hangovers — exact, and fast enough for every run;
- **live** (:func:`live`): calls over real WebSockets to a server running the ``probe`` stage
  (:mod:`bench.probe`) with the hangover under test — the engine's own end-of-turn decisions,
  speech starts and barge-in ``clear`` s, timed on the emulated caller's clocks.

Definitions (all times in media ms of the caller's microphone):

- an end-of-turn decision is *premature* when it falls inside a sentence, i.e. before the end
  of the sentence's last phrase; the *premature share* is premature decisions / all decisions;
- *turn latency* (effective hangover) is the first decision at or after a sentence's end minus
  that end (the truth: frames above about −40 dBFS, as :func:`engine.testing.speech_bounds`);
- a *false start* is a speech start while only noise is played; a *false barge-in* is a
  ``clear`` received while the bot talks and the caller's microphone carries only noise;
- *onset → clear* is the delay from the true onset of caller speech over the bot's talk to the
  ``clear`` that cuts it.

The end-of-turn analyzer beside this detector is measured in :mod:`bench.end_of_turn`
(:func:`~bench.end_of_turn.analyzer_rows` and the rows after it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import trio

from bench.material import (
    NOISES,
    PHRASED_SENTENCES,
    VOICES,
    PausedSpeech,
    paused_speech,
    speech_level,
)
from bench.probe import END_MARKER, START_MARKER
from bench.procs import Server
from engine.media.codec import ulaw_decode
from engine.media.frames import SpeechStarted, Utterance
from engine.media.vad import TurnConfig, TurnDetector, TurnEvent
from engine.testing import StreamRecord, open_inbound_call, speech_bounds
from engine.tts import speak_ulaw

__all__ = [
    "GOALS",
    "NoiseResult",
    "SpeechResult",
    "TurnTaking",
    "decisions",
    "live",
    "onset_clips",
    "percentile",
    "replay",
    "replay_noise",
    "replay_speech",
    "run_replay",
    "score_speech",
]

GOALS = {
    "premature_share_max": 0.05,
    "effective_hangover_max_ms": 300,
    "false_barge_ins": 0,
    "onset_to_clear_max_ms": 40,
    "turn_latency_over_hangover_p99_max_ms": 20,
}
"""Issue #5's goals for turn-taking quality."""


@dataclass
class SpeechResult:
    """End-of-turn decisions on speech with pauses inside sentences, at one hangover."""

    hangover_ms: int
    sentences: int
    pauses: int
    decisions: int
    premature: int
    """Decisions inside a sentence (before its last phrase ended)."""
    missed: int
    """Sentences with no decision after their end (before the next sentence began)."""
    latency_ms: list[float]
    """Per sentence: first decision at or after its end − its end (the effective hangover)."""

    @property
    def premature_share(self) -> float:
        """Premature decisions / all decisions."""
        return self.premature / self.decisions if self.decisions else 0.0


@dataclass
class NoiseResult:
    """Speech starts and barge-ins on noise alone, at speaking level."""

    noise: str
    seconds: float
    false_starts: int
    """Speech starts while the caller only played noise (the bot silent)."""
    false_turn_ms: int | None = None
    """Total length of the false turns (their utterances; replay only)."""
    false_barge_ins: int | None = None
    """``clear`` s received while the bot talked over the noise (live runs only)."""
    barge_in_seconds: float = 0.0
    """How long the bot talked over the noise (live runs only)."""


@dataclass
class TurnTaking:
    """The scenario's results: replayed at several hangovers, and live where run."""

    material_seconds: float
    speech_level_rms: float
    pause_ms: tuple[int, int]
    configured_hangover_ms: int
    replay_speech: list[SpeechResult] = field(default_factory=list)
    replay_noise: list[NoiseResult] = field(default_factory=list)
    live_speech: list[SpeechResult] = field(default_factory=list)
    live_noise: list[NoiseResult] = field(default_factory=list)
    onset_to_clear_ms: list[float] = field(default_factory=list)
    onset_detect_ms: list[float] = field(default_factory=list)
    """Replay: true onset of each sentence → end of the frame on which speech was declared."""
    goals: dict[str, float] = field(default_factory=lambda: dict(GOALS))
    analyzer: list[dict[str, object]] = field(default_factory=list)
    """:func:`analyzer_rows`, when run."""
    decision_load: list[dict[str, object]] = field(default_factory=list)
    """:func:`decision_load_rows`, when run."""
    analyzer_live: list[dict[str, object]] = field(default_factory=list)
    """:func:`live_analyzer_rows`, when run."""


def replay(ulaw: bytes, config: TurnConfig) -> list[tuple[int, TurnEvent]]:
    """Every event of a detector fed ``ulaw`` frame by frame, with its decision time (ms).

    The decision time is the end of the frame that completed the event, as a server that got
    that frame would decide.
    """
    detector = TurnDetector(config)
    pcm = ulaw_decode(ulaw)
    events: list[tuple[int, TurnEvent]] = []
    for i in range(0, len(pcm) - 159, 160):
        for event in detector.process(pcm[i : i + 160], i // 8):
            events.append((i // 8 + 20, event))
    return events


def decisions(events: Sequence[tuple[int, TurnEvent]]) -> list[int]:
    """The decision times of the end-of-turn events among ``events``."""
    return [t for t, event in events if isinstance(event, Utterance)]


def score_speech(
    material: PausedSpeech, decided: Sequence[float], hangover_ms: int
) -> SpeechResult:
    """Score end-of-turn decision times against the truth of ``material``."""
    sentences = material.sentences
    premature = sum(1 for t in decided if any(s < t < e for s, e in sentences))
    latency: list[float] = []
    missed = 0
    for k, (_, end) in enumerate(sentences):
        limit = sentences[k + 1][0] if k + 1 < len(sentences) else float("inf")
        after = [t for t in decided if end <= t < limit]
        if after:
            latency.append(float(after[0] - end))
        else:
            missed += 1
    return SpeechResult(
        hangover_ms=hangover_ms,
        sentences=len(sentences),
        pauses=len(material.pauses),
        decisions=len(decided),
        premature=premature,
        missed=missed,
        latency_ms=latency,
    )


def replay_speech(
    material: PausedSpeech, config: TurnConfig, hangovers: Sequence[int]
) -> tuple[list[SpeechResult], list[float]]:
    """Premature ends at each hangover; and the onset → speech-declared delays (ms)."""
    results = []
    onsets: list[float] = []
    for hangover in hangovers:
        events = replay(material.ulaw, replace(config, hangover_ms=hangover))
        results.append(score_speech(material, decisions(events), hangover))
        if hangover == config.hangover_ms:
            starts = [t for t, e in events if isinstance(e, SpeechStarted)]
            for onset, end in material.sentences:
                declared = [t for t in starts if onset - 200 <= t <= end]
                if declared:
                    onsets.append(float(declared[0] - onset))
    return results, onsets


def replay_noise(
    noise: str, ulaw: bytes, config: TurnConfig, seconds: float | None = None
) -> NoiseResult:
    """False starts of a detector on ``ulaw`` (noise only)."""
    events = replay(ulaw, config)
    return NoiseResult(
        noise=noise,
        seconds=seconds if seconds is not None else len(ulaw) / 8000,
        false_starts=sum(isinstance(e, SpeechStarted) for _, e in events),
        false_turn_ms=sum(e.end - e.start for _, e in events if isinstance(e, Utterance)),
    )


def make_material(
    sentences: int, noise_seconds: float, seed: int = 0
) -> tuple[PausedSpeech, float, dict[str, bytes]]:
    """The paused speech, its active level, and each noise at that level."""
    speech = paused_speech(sentences, seed=seed)
    level = speech_level(speech.ulaw)
    noises = {name: make(noise_seconds, level, seed=seed + 1) for name, make in NOISES.items()}
    return speech, level, noises


def run_replay(
    sentences: int,
    noise_seconds: float,
    config: TurnConfig,
    hangovers: Sequence[int],
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TurnTaking:
    """The replay half of the scenario."""
    if progress:
        progress("turn-taking material")
    speech, level, noises = make_material(sentences, noise_seconds, seed)
    result = TurnTaking(
        material_seconds=speech.duration_ms / 1000,
        speech_level_rms=round(level, 1),
        pause_ms=(min(b - a for a, b in speech.pauses), max(b - a for a, b in speech.pauses)),
        configured_hangover_ms=config.hangover_ms,
    )
    result.replay_speech, result.onset_detect_ms = replay_speech(speech, config, hangovers)
    result.replay_noise = [replay_noise(name, ulaw, config) for name, ulaw in noises.items()]
    return result


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values`` (nearest rank), or ``None`` if empty."""
    if not len(values):
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q, method="inverted_cdf"))


# -- live: the engine over WebSockets --------------------------------------------------------------


def _marker_times(record: StreamRecord, marker: bytes) -> list[float]:
    return [(t - record.t0) * 1000 for t, payload in record.received if marker in payload]


async def _live_speech(
    url: str, token: str, material: PausedSpeech, hangover_ms: int
) -> list[float]:
    async with open_inbound_call(url, token) as call:
        await call.say(material.ulaw)  # queued before the first tick: material time = media time
        await call.pause(hangover_ms / 1000 + 0.5)
        return _marker_times(call.record, END_MARKER)


async def _live_noise(
    url: str, token: str, name: str, noise: bytes, listen_s: float, talk_s: float
) -> NoiseResult:
    async with open_inbound_call(url, token) as call:
        record = call.record
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call.say, noise)  # noise from the first frame of the call
            await trio.sleep(listen_s)
            talk_from = call.now_ms()
            await call.dtmf("1")
            await trio.sleep(talk_s)
            talk_to = call.now_ms()
            await call.dtmf("0")
        clears = [(t - record.t0) * 1000 for t, _ in record.clears]
        return NoiseResult(
            noise=name,
            seconds=len(noise) / 8000,
            false_starts=len(_marker_times(record, START_MARKER)),
            false_barge_ins=sum(1 for c in clears if talk_from <= c < talk_to),
            barge_in_seconds=round(sum(record.played[talk_from // 20 : talk_to // 20]) / 50, 2),
        )


async def _live_onsets(url: str, token: str, clips: list[bytes], hangover_ms: int) -> list[float]:
    reactions: list[float] = []
    async with open_inbound_call(url, token) as call:
        record = call.record
        await call.pause(0.2)
        await call.dtmf("1")
        for clip in clips:
            with trio.move_on_after(3):
                while not any(record.played[-5:]):  # wait until the bot is talking
                    await trio.sleep(0.02)
            await call.pause(0.3)
            before = len(record.clears)
            start = record.frames_sent * 20
            await call.say(clip)
            await call.pause(hangover_ms / 1000 + 0.3)
            if len(record.clears) > before:
                clear_at = (record.clears[before][0] - record.t0) * 1000
                reactions.append(clear_at - (start + speech_bounds(clip)[0]))
        await call.dtmf("0")
    return reactions


def onset_clips(count: int) -> list[bytes]:
    """Short caller phrases (several voices) to barge in with."""
    return [
        speak_ulaw(PHRASED_SENTENCES[i % len(PHRASED_SENTENCES)][0], voice=VOICES[i % len(VOICES)])
        for i in range(count)
    ]


def live(
    server: Server,
    result: TurnTaking,
    *,
    hangover_ms: int,
    sentences: int,
    noise_listen_s: float,
    noise_talk_s: float,
    onset_trials: int,
    seed: int = 0,
) -> None:
    """The live half: calls to ``server`` (``bench.probe:create`` at ``hangover_ms``).

    Appends to ``result``: a :class:`SpeechResult` at ``hangover_ms``, and, when ``noise_*`` and
    ``onset_trials`` are non-zero, the noise calls and the onset → clear delays.
    """
    url, token = server.url, server.auth_token
    material = paused_speech(sentences, seed=seed)
    decided = trio.run(_live_speech, url, token, material, hangover_ms)
    result.live_speech.append(score_speech(material, decided, hangover_ms))
    if noise_talk_s > 0:
        level = speech_level(material.ulaw)
        for name, make in NOISES.items():
            noise = make(noise_listen_s + noise_talk_s + 0.5, level, seed=seed + 1)
            result.live_noise.append(
                trio.run(_live_noise, url, token, name, noise, noise_listen_s, noise_talk_s)
            )
    if onset_trials:
        clips = onset_clips(onset_trials)
        result.onset_to_clear_ms += trio.run(_live_onsets, url, token, clips, hangover_ms)
