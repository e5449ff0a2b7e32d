"""End of turn: has the caller finished speaking, or only paused? (issue #12)

- :mod:`~engine.media.turn.policy` — the sans-IO policy: speech segmentation by the engine's
  VAD, a schedule of questions at growing pauses with thresholds that loosen as the pause grows,
  the text and prosody cues, the max-silence and VAD fallbacks;
- :mod:`~engine.media.turn.features` and :mod:`~engine.media.turn.smart_turn` — Smart Turn v3
  (pipecat-ai, BSD-2; the ONNX file is vendored here, see ``SOURCE.md``) in numpy + onnxruntime;
- :mod:`~engine.media.turn.service` — the model off the event loop: batched, in low-priority
  worker threads, refusing at once what it could not answer in time;
- :mod:`~engine.media.turn.analyzer` — the analyzer interface, the VAD rule, and the per-call
  :class:`~engine.media.turn.analyzer.TurnTaker` that the media reader loop feeds;
- :mod:`~engine.media.turn.live` — the call session's side: the turn step a call's reader
  loop runs (the plain VAD, or a turn-taker giving the same frames), the counters in
  ``/metrics``, and :class:`~engine.media.turn.live.SharedSmartTurn`, the process's model.

In a served call it is all wired, and the default (``voice-engine serve`` = ``--turn
smart-turn``, ``SessionConfig(turn_taking="smart-turn")``; ``--turn vad`` for the silence rule
alone; a stage may choose for its calls, see :mod:`engine.media.stage`). By hand::

    model = SmartTurnModel()                     # once per process (~0.3 s to load)
    async with open_scoring_service(model, threads=1, max_wait_s=0.8) as service:  # once
        ...
        # per call, in place of TurnDetector:
        async with open_turn_taker(SmartTurnAnalyzer(service), PolicyConfig()) as turn:
            for every inbound 20 ms frame (160 int16 samples at 8 kHz, silence included):
                for event in turn.feed(pcm, media_ms):
                    SpeechStarted -> as today (barge-in: clear if the bot talks)
                    EndOfTurn     -> hand event.utterance / event.speech_ended to the stage
                    Question      -> nothing (sent to the model already; log if you like)
            turn.set_transcript(partial) whenever a transcribing pipeline's words change

``open_turn_taker(None, PolicyConfig(fallback_hangover_ms=500))`` is the plain VAD rule.
"""

from engine.media.turn.analyzer import (
    SmartTurnAnalyzer,
    TurnAnalyzer,
    TurnTaker,
    TurnTakerStatistics,
    VadRule,
    open_turn_taker,
)
from engine.media.turn.policy import (
    EndOfTurn,
    EndOfTurnPolicy,
    PolicyConfig,
    PolicyEvent,
    Question,
    Rung,
    text_incomplete,
)
from engine.media.turn.service import (
    ScoringModel,
    ScoringService,
    ServiceSaturated,
    ServiceStatistics,
    open_scoring_service,
)

__all__ = [
    "EndOfTurn",
    "EndOfTurnPolicy",
    "PolicyConfig",
    "PolicyEvent",
    "Question",
    "Rung",
    "ScoringModel",
    "ScoringService",
    "ServiceSaturated",
    "ServiceStatistics",
    "SmartTurnAnalyzer",
    "TurnAnalyzer",
    "TurnTaker",
    "TurnTakerStatistics",
    "VadRule",
    "open_scoring_service",
    "open_turn_taker",
    "text_incomplete",
]
