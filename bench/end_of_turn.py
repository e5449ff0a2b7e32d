"""End-of-turn benchmark (issue #12), offline: the VAD rule vs. Smart Turn v3 policies.

Everything is replayed in process, frame by frame, in media time, through
:class:`~engine.media.turn.policy.EndOfTurnPolicy` (the engine's webrtcvad framing and noise
gate, as :mod:`engine.media.vad`):

- **quality** (:func:`quality`): on real recordings (:func:`bench.turn_material.real_speech`,
  one stream per turn) and on eSpeak sentences (:func:`bench.turn_material.synthetic_speech`):
  premature ends of turn per internal pause and per decision, and the latency from the real end
  of speech (the last aligned word) to the decision, p50/p99. A question's answer is applied
  ``answer_delay_ms`` after it was asked (the measured single-window inference time on this
  machine, unless given), which is what a live call would see with a free worker thread; and
  again at 40 ms (a fast core). Model answers are memoised by window, so configurations share
  inferences. The text cue reads an oracle transcript (the aligned words, no punctuation).
- **load** (:func:`load`, in :mod:`bench.end_of_turn_load`): decision latency and throughput of
  the batched :class:`~engine.media.turn.service.ScoringService` at 50 and 200 concurrent calls.
- **barge-in** (:func:`bench.end_of_turn_load.barge_in`): false barge-ins per minute on babble,
  street and fan noise at speaking level, and onset → barge-in on real and synthetic speech, for
  the VAD start rule with several minimum speech durations and with Silero VAD's confirmation.

Note: the ``vad-*`` configurations here are the policy's own VAD rule (its 120 ms segmenter's
silence), not the engine's detector (:class:`~engine.media.vad.TurnDetector`), which holds a
turn through breaths and line noise: it cuts fewer pauses on this material and ends later
(:func:`analyzer_rows` compares with the detector itself, as calls run it).

``python -m bench.end_of_turn`` prints the tables; :func:`run` returns them as a dict.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import cast

import numpy as np

from bench.end_of_turn_live import live_load
from bench.end_of_turn_load import SILERO, barge_in, load
from bench.turn_material import Speech, decode, real_speech, synthetic_speech
from bench.turn_taking import decisions as vad_decisions
from bench.turn_taking import percentile, score_speech
from bench.turn_taking import replay as vad_replay
from engine.media.turn.live import live_policy
from engine.media.turn.policy import EndOfTurn, EndOfTurnPolicy, PolicyConfig, Question, Rung
from engine.media.turn.smart_turn import SmartTurnModel
from engine.media.vad import TurnConfig

__all__ = [
    "CONFIGS",
    "Replay",
    "WindowScorer",
    "analyzer_rows",
    "decision_load_rows",
    "live_analyzer_rows",
    "quality",
    "replay",
    "run",
    "summarize",
]


BASE = PolicyConfig()
"""The default policy: the schedule, context across a cut-in, the text cue."""
CONFIGS: dict[str, PolicyConfig] = {
    "vad-300": replace(BASE, schedule=(), fallback_hangover_ms=300),
    "vad-500": replace(BASE, schedule=(), fallback_hangover_ms=500),
    "vad-700": replace(BASE, schedule=(), fallback_hangover_ms=700),
    "model once@200 p≥0.5 (pipecat)": replace(
        BASE, schedule=(Rung(200, 0.5),), max_silence_ms=3000, context_ms=0, text_cap=1.0
    ),
    "model once@200 p≥0.5 +max1200": replace(
        BASE, schedule=(Rung(200, 0.5),), max_silence_ms=1200, context_ms=0, text_cap=1.0
    ),
    ".9/.6/.4 @200/500/800": replace(
        BASE,
        schedule=(Rung(200, 0.9), Rung(500, 0.6), Rung(800, 0.4)),
        context_ms=0,
        text_cap=1.0,
    ),
    ".9/.7/.4 @300/500/800": replace(BASE, context_ms=0, text_cap=1.0),
    ".9/.7/.4 @300/500/800 +context": replace(BASE, text_cap=1.0),
    ".9/.7/.4 @300/500/800 +context +text (default)": BASE,
    "default +prosody": replace(BASE, rise_cap=0.3),
    ".95/.8/.5 @200/400/700 +context +text": replace(
        BASE, schedule=(Rung(200, 0.95), Rung(400, 0.8), Rung(700, 0.5))
    ),
}
"""The configurations compared; the text cue reads an oracle transcript (the aligned words)."""


class WindowScorer:
    """Smart Turn on a stream's windows, memoised by (stream, window start, end)."""

    def __init__(self, model: SmartTurnModel) -> None:
        self.model = model
        self._memo: dict[tuple[str, int, int], float] = {}
        self.inferences = 0
        self.seconds = 0.0

    def __call__(self, key: str, question: Question) -> float:
        """P(complete) of the question's audio."""
        k = (key, question.asked_at - len(question.audio) // 8, question.asked_at)
        if k not in self._memo:
            started = time.perf_counter()
            self._memo[k] = self.model.probability(question.audio)
            self.seconds += time.perf_counter() - started
            self.inferences += 1
        return self._memo[k]


@dataclass(frozen=True, slots=True)
class Replay:
    """The decisions of one configuration on one stream."""

    decisions: list[int]
    reasons: dict[str, int]
    questions: int


def replay(
    speech: Speech,
    config: PolicyConfig,
    scorer: WindowScorer | None,
    answer_delay_ms: int,
) -> Replay:
    """Feed ``speech`` to a policy; answer its questions ``answer_delay_ms`` later."""
    policy = EndOfTurnPolicy(config)
    pcm = decode(speech)
    pending: list[tuple[int, Question]] = []
    decisions: list[int] = []
    reasons: dict[str, int] = {}

    def take(events: Sequence[object]) -> None:
        for event in events:
            if isinstance(event, Question):
                pending.append((event.asked_at + answer_delay_ms, event))
            elif isinstance(event, EndOfTurn):
                decisions.append(event.decided_at)
                reasons[event.reason] = reasons.get(event.reason, 0) + 1

    for i in range(0, len(pcm) - 159, 160):
        now = i // 8
        due = [q for t, q in pending if t <= now]
        pending = [(t, q) for t, q in pending if t > now]
        for question in due:
            assert scorer is not None
            take(policy.answer(question.id, scorer(speech.name, question)))
        if config.text_cap < 1.0:
            policy.set_transcript(speech.transcript(now))
        take(policy.feed(pcm[i : i + 160], now))
    return Replay(decisions, reasons, policy.questions)


def summarize(
    name: str, label: str, speeches: Sequence[Speech], results: Sequence[Replay]
) -> dict[str, object]:
    """One row: the decisions of configuration ``name`` on each of ``speeches`` scored."""
    pauses = sentences = decisions = premature = missed = questions = 0
    latency: list[float] = []
    reasons: dict[str, int] = {}
    cut: list[tuple[str, int, int]] = []
    for speech, result in zip(speeches, results, strict=True):
        scored = score_speech(speech.material, result.decisions, 0)
        pauses += scored.pauses
        sentences += scored.sentences
        decisions += scored.decisions
        premature += scored.premature
        missed += scored.missed
        questions += result.questions
        latency += scored.latency_ms
        for reason, count in result.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
        for t in result.decisions:
            if any(s < t < e for s, e in speech.material.sentences):
                a, b = next(((a, b) for a, b in reversed(speech.material.pauses) if a <= t), (t, t))
                cut.append((speech.name, a, b - a))  # which pause (start, length) was cut
    return {
        "config": name,
        "material": label,
        "pauses": pauses,
        "sentences": sentences,
        "decisions": decisions,
        "premature": premature,
        "premature_per_pause": round(premature / pauses, 3) if pauses else None,
        "premature_share": round(premature / decisions, 3) if decisions else 0.0,
        "missed": missed,
        "latency_p50_ms": percentile(latency, 50),
        "latency_p99_ms": percentile(latency, 99),
        "latency_ms": latency,
        "questions": questions,
        "reasons": reasons,
        "cut_pauses": cut,
    }


def quality(
    materials: dict[str, list[Speech]],
    scorer: WindowScorer,
    answer_delay_ms: int,
    configs: dict[str, PolicyConfig] = CONFIGS,
) -> list[dict[str, object]]:
    """One row per (configuration, material)."""
    rows = []
    for name, config in configs.items():
        for label, speeches in materials.items():
            model = scorer if config.schedule else None
            results = [replay(speech, config, model, answer_delay_ms) for speech in speeches]
            rows.append(summarize(name, label, speeches, results))
    return rows


def measure_inference(model: SmartTurnModel, speech: Speech, runs: int = 5) -> list[float]:
    """Wall-clock ms of single-window decisions (features + model) on ``speech``."""
    pcm = decode(speech)
    times = []
    for k in range(runs):
        end = min(len(pcm), (k + 1) * 8000 * 3)
        started = time.perf_counter()
        model.probability(pcm[:end])
        times.append((time.perf_counter() - started) * 1000)
    return times


def run(
    *,
    synthetic: bool = True,
    answer_delay_ms: int | None = None,
    load_seconds: float = 15.0,
    barge_in_seconds: float = 60.0,
) -> dict[str, object]:
    """The whole benchmark as a dict (see the module docstring)."""
    model = SmartTurnModel()
    materials = {"real": real_speech()}
    if synthetic:
        materials["synthetic"] = [synthetic_speech()]
    single = measure_inference(model, materials["real"][-1])
    delay = answer_delay_ms
    if delay is None:
        delay = int(-(-float(np.median(single)) // 20) * 20)
    scorer = WindowScorer(model)
    rows = quality(materials, scorer, delay)
    fast = quality(materials, scorer, 40, {k: v for k, v in CONFIGS.items() if v.schedule})
    result: dict[str, object] = {
        "single_decision_ms": [round(t, 1) for t in single],
        "answer_delay_ms": delay,
        "quality": rows,
        "quality_at_40ms": fast,
        "inferences": scorer.inferences,
        "inference_ms_mean": round(scorer.seconds / max(1, scorer.inferences) * 1000, 1),
    }
    if load_seconds > 0:
        result["load"] = [
            load(model, calls, seconds=load_seconds, max_batch=batch)
            for calls in (10, 50, 200)
            for batch in (1, 4)
        ]
    if barge_in_seconds > 0:
        silero = SILERO if SILERO.exists() else None
        result["barge_in"] = barge_in(materials, seconds=barge_in_seconds, silero=silero)
    return result


# -- the end-of-turn analyzer beside the VAD (issue #12) ------------------------------------------


def analyzer_rows(
    *,
    synthetic: bool = True,
    hangovers: Sequence[int] = (300, 500, 700),
    answer_delay_ms: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, object]]:
    """VAD and Smart Turn side by side, replayed (see the module docstring); one row per
    (configuration, material) with ``premature_per_pause``, ``latency_p50_ms``,
    ``latency_p99_ms``, ``missed`` and the counts behind them.

    Smart Turn runs the policy exactly as a live call configures it
    (:func:`engine.media.turn.live.live_policy`: the engine's VAD tuning, the VAD rule at 500 ms
    as its fallback), its answers applied after the measured single-decision time on this
    machine (``answer_delay_ms``) and after 40 ms (a fast core); a third row gives it the words
    so far (an oracle transcript, as ``local`` and ``llm`` could with ``note_transcript``).
    """
    if progress:
        progress("end-of-turn material and model")
    materials = {"real": real_speech()}
    if synthetic:
        materials["synthetic"] = [synthetic_speech()]
    model = SmartTurnModel()
    delay = answer_delay_ms
    if delay is None:
        single = float(np.median(measure_inference(model, materials["real"][-1])))
        delay = int(-(-single // 20) * 20)
    scorer = WindowScorer(model)
    live = live_policy(TurnConfig(), PolicyConfig())
    audio_only = replace(live, text_cap=1.0)  # turn-echo has no words
    rows: list[dict[str, object]] = []
    for label, speeches in materials.items():
        for hangover in hangovers:
            vad = TurnConfig(hangover_ms=hangover)
            results = []
            for speech in speeches:
                decided = vad_decisions(vad_replay(speech.material.ulaw, vad))
                results.append(Replay(decided, {"vad": len(decided)}, 0))
            rows.append(summarize(f"vad {hangover} ms", label, speeches, results))
        for name, policy, answer_ms in (
            (f"smart-turn (answers after {delay} ms)", audio_only, delay),
            ("smart-turn (answers after 40 ms)", audio_only, 40),
            (f"smart-turn + words (answers after {delay} ms)", live, delay),
        ):
            if progress:
                progress(f"{name} on {label} speech")
            results = [replay(s, policy, scorer, answer_ms) for s in speeches]
            rows.append(summarize(name, label, speeches, results))
    for row in rows:
        row["answer_delay_ms"] = delay
    return rows


def decision_load_rows(
    calls: Sequence[int] = (50, 200), *, seconds: float = 15.0
) -> list[dict[str, object]]:
    """Decision latency p50/p99, decisions per second per core, and the share of questions
    that fell back (refused at once or late), at each number of concurrent calls, on the
    scoring service as a live server runs it (:func:`bench.end_of_turn_load.load`)."""

    model = SmartTurnModel()
    return [load(model, n, seconds=seconds) for n in calls]


def live_analyzer_rows(
    calls: Sequence[int] = (10, 50), *, echo_calls: int = 4
) -> list[dict[str, object]]:
    """VAD and Smart Turn live, with ``calls`` talking calls on one server
    (:func:`bench.end_of_turn_live.live_load`): quality, how turns were decided, answer
    times, and the media loop (echo round trip, loop lag)."""

    return [
        live_load(turn, n, echo_calls=echo_calls) for n in calls for turn in ("vad", "smart-turn")
    ]


def _table(rows: Sequence[dict[str, object]], keys: Sequence[str]) -> str:
    widths = [max(len(k), *(len(str(r.get(k))) for r in rows)) for k in keys]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))]
    for r in rows:
        lines.append("  ".join(str(r.get(k)).ljust(w) for k, w in zip(keys, widths, strict=True)))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the benchmark's tables (``--json FILE`` also writes the dict)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--answer-delay-ms", type=int)
    parser.add_argument("--load-seconds", type=float, default=15.0)
    parser.add_argument("--barge-in-seconds", type=float, default=60.0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    result = run(
        synthetic=not args.no_synthetic,
        answer_delay_ms=args.answer_delay_ms,
        load_seconds=args.load_seconds,
        barge_in_seconds=args.barge_in_seconds,
    )
    keys = ["config", "material", "pauses", "premature", "premature_per_pause"]
    keys += ["premature_share", "missed", "latency_p50_ms", "latency_p99_ms", "questions"]
    tables = cast(dict[str, list[dict[str, object]]], result)
    print(f"single decision ms: {result['single_decision_ms']}")
    print(f"\nanswers applied {result['answer_delay_ms']} ms after the question:")
    print(_table(tables["quality"], keys))
    print("\nanswers applied 40 ms after the question (a fast core):")
    print(_table(tables["quality_at_40ms"], keys))
    for name in ("load", "barge_in"):
        if name in tables:
            print(f"\n{name}:")
            print(_table(tables[name], list(tables[name][0])))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1, default=str)


if __name__ == "__main__":
    main()
