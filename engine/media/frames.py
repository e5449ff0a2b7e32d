"""The frames that flow between a call's stages: a handful of small frozen dataclasses.

Inbound (towards the AI stage): :class:`Audio`, :class:`SpeechStarted`, :class:`Utterance`,
:class:`SpeechEnded`, :class:`Dtmf`, :class:`Interrupted`, :class:`PlaybackDone`.
Outbound (towards playout): :class:`PlayAudio`, :class:`Interrupt`, :class:`HangUp`; and
:class:`MarkEcho` from the reader, when Twilio reports that audio before a mark has played.
Dispatch with ``match``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from engine.media.codec import ulaw_decode

__all__ = [
    "PCM",
    "Audio",
    "Dtmf",
    "Frame",
    "HangUp",
    "Interrupt",
    "Interrupted",
    "MarkEcho",
    "PlayAudio",
    "PlaybackDone",
    "SpeechEnded",
    "SpeechStarted",
    "Utterance",
]

PCM = npt.NDArray[np.int16]
"""Mono 16-bit samples at 8 kHz unless a name says otherwise."""


@dataclass(frozen=True, slots=True, init=False)
class Audio:
    """One inbound media frame: ``ulaw`` as Twilio sent it, ``pcm`` decoded, ``timestamp`` in ms.

    ``pcm`` may be given as ``None``: it is then decoded from ``ulaw`` on first use, so a stage
    that never looks at samples (echo, a μ-law speech-to-speech bridge) costs no decode.
    """

    ulaw: bytes
    timestamp: int
    _pcm: PCM | None = field(repr=False, compare=False)

    def __init__(self, ulaw: bytes, pcm: PCM | None, timestamp: int) -> None:
        object.__setattr__(self, "ulaw", ulaw)
        object.__setattr__(self, "timestamp", timestamp)
        object.__setattr__(self, "_pcm", pcm)

    @property
    def pcm(self) -> PCM:
        """The samples, 8 kHz int16 (decoded on first use when not given)."""
        pcm = self._pcm
        if pcm is None:
            pcm = ulaw_decode(self.ulaw)
            object.__setattr__(self, "_pcm", pcm)
        return pcm


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started talking; ``timestamp`` is the media time (ms) of the first voiced frame,
    ``detected_at`` the media time of the frame on which the detector decided."""

    timestamp: int
    detected_at: int


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The caller stopped talking (after the silence hangover) at media time ``timestamp`` (ms)."""

    timestamp: int


@dataclass(frozen=True, slots=True)
class Utterance:
    """One caller turn: its audio (pre-roll included) and its media start/end times in ms."""

    pcm: PCM
    start: int
    end: int

    @property
    def duration_ms(self) -> int:
        """The length of ``pcm`` in milliseconds."""
        return len(self.pcm) // 8


@dataclass(frozen=True, slots=True)
class Dtmf:
    """The caller pressed a key."""

    digit: str


@dataclass(frozen=True, slots=True)
class Interrupted:
    """Barge-in: the caller spoke over the bot, playout sent ``clear``.

    ``label`` names the reply that was cut, ``heard_ms`` is how much of it the caller heard and
    ``dropped_ms`` how much was sent or queued but never played.
    """

    label: str
    heard_ms: int
    dropped_ms: int


@dataclass(frozen=True, slots=True)
class PlaybackDone:
    """Everything queued under ``label`` has been played to the caller (``heard_ms`` of it)."""

    label: str
    heard_ms: int


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """μ-law audio (8 kHz) for playout, under a reply ``label`` (see :class:`Interrupted`)."""

    ulaw: bytes
    label: str = ""


@dataclass(frozen=True, slots=True)
class MarkEcho:
    """Twilio echoed the mark ``name``: audio queued before it has played (or was cleared)."""

    name: str


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The stage cuts the bot's audio (its own barge-in): playout sends ``clear`` if anything is
    queued or playing and answers with :class:`Interrupted`; if nothing is, it does nothing."""

    reason: str = "interrupt"


@dataclass(frozen=True, slots=True)
class HangUp:
    """End the call once playout has drained (``drain``) or at once; ``reason`` is logged."""

    reason: str = "hang-up"
    drain: bool = True


Frame = (
    Audio
    | SpeechStarted
    | SpeechEnded
    | Utterance
    | Dtmf
    | Interrupted
    | PlaybackDone
    | PlayAudio
    | Interrupt
    | MarkEcho
    | HangUp
)
"""Any frame."""
