"""What a call is tuned with and how it ended: :class:`SessionConfig`, :class:`CallEnd`,
:class:`CallOutcome` — the values a :class:`~engine.media.session.CallSession` takes and gives,
kept apart from the frame loop that uses them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from engine.errors import CLOSE_NORMAL
from engine.media.playout import PlayoutConfig, PlayoutStatistics
from engine.media.protocol import Start
from engine.media.turn.analyzer import TurnTakerStatistics
from engine.media.turn.policy import PolicyConfig
from engine.media.vad import TurnConfig

__all__ = ["TURN_TAKING", "Authorizer", "CallEnd", "CallOutcome", "SessionConfig"]

TURN_TAKING = ("vad", "smart-turn")
"""The ways a caller's turn can end (:attr:`SessionConfig.turn_taking`)."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Tuning of a call session."""

    turn: TurnConfig = field(default_factory=TurnConfig)
    """The VAD: speech starts (barge-in) and, with its ``hangover_ms``, the VAD rule."""
    turn_taking: Literal["vad", "smart-turn"] = "smart-turn"
    """How a caller's turn ends (a stage may choose for its calls, see :mod:`engine.media.stage`):
    ``"smart-turn"`` (the default: on real speech it cuts no more pauses than the VAD rule and
    answers about twice as soon, see the README) when Smart Turn v3, asked at the pauses of
    ``end_of_turn``'s schedule, says the caller has finished — or by the VAD rule for a turn
    where the model is slow, failing or saturated; ``"vad"`` after ``turn.hangover_ms`` of
    silence (better for synthetic callers, on which the model is rarely confident)."""
    end_of_turn: PolicyConfig = field(default_factory=PolicyConfig)
    """When an analyzer decides: the pauses it is asked at, their thresholds, the longest
    silence; its VAD tuning and fallback hangover are taken from ``turn``."""
    turn_timeout: float = 0.8
    """Seconds an analyzer may take to answer before that turn falls back to the VAD rule; the
    shared Smart Turn refuses at once a question it could not answer within it."""
    turn_threads: int | None = None
    """Worker threads of the process's shared Smart Turn (read once, by the server); default:
    the cores but one (the media loop's)."""
    playout: PlayoutConfig = field(default_factory=PlayoutConfig)
    start_timeout: float = 10.0
    """Seconds allowed for ``connected`` + ``start`` before the socket is closed."""
    close_timeout: float = 1.0
    """Seconds allowed for the closing handshake."""
    stage_inbox_size: int = 50
    """Frames queued for the stage (1 s of audio); live audio beyond it drops oldest."""
    stage_stall_timeout: float = 10.0
    """A stage that takes nothing from a non-empty inbox for this long is hung: the call ends
    (close 1011) rather than sitting there forever."""
    silence_timeout: float = 5.0
    """Twilio sends a message every 20 ms; a stream that sends nothing for this long is dead
    (a partition, a stuck proxy) and is ended, freeing its call slot."""
    playout_inbox_size: int = 64
    probe_every: int = 16
    """One call in this many has its per-frame steps timed for the metrics (the first call
    always); 0 times none."""

    def __post_init__(self) -> None:
        if self.turn_taking not in TURN_TAKING:
            raise ValueError(f"turn_taking must be one of {', '.join(TURN_TAKING)}")
        if self.turn_threads is not None and self.turn_threads < 1:
            raise ValueError("turn_threads must be at least 1")


@dataclass(frozen=True, slots=True)
class CallEnd:
    """Why a call ended, and how its socket was closed."""

    reason: str
    """``stop``, ``hang-up``, ``peer-closed``, ``peer-silent``, ``protocol-error``,
    ``stage-error``, ``stage-stalled``, ``stage-finished``, ``rejected``, ``start-timeout``
    or ``shutdown``."""
    close_code: int | None = CLOSE_NORMAL
    """The close code sent (``None``: the peer was gone, nothing was sent)."""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """How a call ended and what it carried."""

    call_sid: str | None
    stream_sid: str | None
    end: CallEnd
    media_frames: int
    dropped_frames: int
    sequence_anomalies: int
    """Sequence numbers skipped, repeated or out of order (counted; the call went on)."""
    unknown_events: int
    playout: PlayoutStatistics | None
    turns: TurnTakerStatistics | None = None
    """The end-of-turn analyzer's counters, when the call used one."""

    @property
    def reason(self) -> str:
        """Why the call ended (``end.reason``)."""
        return self.end.reason

    @property
    def close_code(self) -> int | None:
        """The close code sent (``end.close_code``)."""
        return self.end.close_code


Authorizer = Callable[[Start], Mapping[str, str]]
"""Checks a stream's ``start`` (its token); returns the verified custom parameters or raises
an :class:`~engine.errors.EngineError` whose ``close_code`` ends the stream."""
