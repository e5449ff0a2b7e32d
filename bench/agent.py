"""A voice agent measured from the caller's side: turn latency, barge-in, premature replies.

Each call plays the same **script** (:func:`agent_script`): sentences of real speech with the
pauses people make inside sentences (:func:`bench.material.paused_speech`, eSpeak NG voices
through μ-law), each followed by a long gap (the reply is heard out) or a short one (the next
sentence comes while the agent is likely still talking: a barge-in). The load generator plays
it on a real-time clock and records, per call, when each frame left and each reply message
arrived, began to play at the caller's ear and where its sound begins (``--record-replies``).

:func:`analyze_call` reads that record against the script's truth (where speech is), with
the caller's playback as Twilio's: audio plays in order, ``clear`` drops what is queued.

- **turn latency**: end of the caller's speech → the first reply sound that starts a new talk
  spurt after it (*sent*: its arrival; *heard*: when it began to play), before the caller
  speaks again; an utterance without one has **no reply**;
- **premature reply**: the agent starts a talk spurt at the caller's ear while the caller is
  still talking (between the first and last speech of a sentence, its inner pauses included);
- **barge-in**: the caller starts speaking while the agent's audio plays: onset → the first
  ``clear`` after it; one not followed within :data:`BARGE_IN_WINDOW_MS` while the agent talks
  on is **ignored**.

Times are the generator's own (kernel receive timestamps); a talk spurt is sound with gaps
under :data:`SPURT_GAP_MS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.material import paused_speech
from bench.procs import Endpoint, run_generator, tree_cpu_seconds, tree_rss_bytes

__all__ = [
    "AGENT_CALLS",
    "AgentStep",
    "CallTurns",
    "Script",
    "agent_script",
    "agent_step",
    "analyze_call",
]

AGENT_CALLS = (1, 10, 50)
"""Concurrent calls the agent is measured at, by default."""
SPURT_GAP_MS = 400.0
"""Sound at the caller's ear with gaps shorter than this is one talk spurt."""
BARGE_IN_WINDOW_MS = 1000.0
"""A barge-in whose ``clear`` has not come this long after the onset, while the agent's audio
still plays, is ignored."""
SILENCE = b"\xff"


@dataclass(frozen=True)
class Script:
    """What every call of an agent run says, and where its speech is (ms from frame 0)."""

    ulaw: bytes
    utterances: list[tuple[int, int]]
    """(first speech, end of the last speech) of each sentence."""
    pauses: list[tuple[int, int]] = field(default_factory=list)
    """Pauses inside sentences (end of speech, start of speech)."""

    @property
    def duration_s(self) -> float:
        """Length in seconds (whole 20 ms frames)."""
        return len(self.ulaw) / 8000


def _aligned(ms: int) -> int:
    return ms // 20 * 20


@cache
def agent_script(
    turns: int = 5,
    *,
    lead_ms: int = 1500,
    long_gap_ms: int = 5000,
    short_gap_ms: int = 1500,
    seed: int = 0,
) -> Script:
    """``turns`` sentences after ``lead_ms`` of silence (time for a greeting); after the 2nd,
    4th, … sentence the gap is short (the next sentence barges in on the reply), after the
    others long. The last gap is long."""
    material = paused_speech(turns, seed=seed, lead_ms=0, gap_ms=(1000, 1000))
    parts = [SILENCE * (lead_ms * 8)]
    at = lead_ms
    utterances: list[tuple[int, int]] = []
    pauses: list[tuple[int, int]] = []
    for i, (start, end) in enumerate(material.sentences):
        cut_start, cut_end = _aligned(start), _aligned(end + 19)
        parts.append(material.ulaw[cut_start * 8 : cut_end * 8])
        shift = at - cut_start
        utterances.append((start + shift, end + shift))
        pauses += [(a + shift, b + shift) for a, b in material.pauses if start <= a < end]
        at += cut_end - cut_start
        gap = short_gap_ms if i % 2 == 1 and i < turns - 1 else long_gap_ms
        parts.append(SILENCE * (_aligned(gap) * 8))
        at += _aligned(gap)
    return Script(b"".join(parts), utterances, pauses)


@dataclass
class CallTurns:
    """What one call's record shows of the agent's turn-taking (times in ms)."""

    turn_sent_ms: list[float] = field(default_factory=list)
    turn_heard_ms: list[float] = field(default_factory=list)
    no_reply: int = 0
    premature: int = 0
    """Utterances during which the agent started talking."""
    barge_in_ms: list[float] = field(default_factory=list)
    barge_ins_ignored: int = 0
    greeting_ms: float | None = None
    """When the agent's first sound arrived, if before the caller first spoke."""


@dataclass(frozen=True)
class _Sound:
    arrival: float
    start: float
    """When its sound began to play."""
    end: float
    """When it stopped playing (cut by a clear)."""


def _sounds(record: dict[str, Any]) -> list[_Sound]:
    """The reply messages with sound, as played at the caller's ear (cleared audio dropped)."""
    clears = sorted(record.get("clears_ms") or [])
    out = []
    for arrival, heard, size, sound in zip(
        record["reply_ms"],
        record["heard_ms"],
        record["reply_bytes"],
        record["sound_ms"],
        strict=False,
    ):
        end = heard + size / 8
        cut = next((c for c in clears if arrival <= c < end), None)
        if cut is not None:
            end = cut
        start = heard + sound if sound >= 0 else math.inf
        if start < end:
            out.append(_Sound(arrival, start, end))
    return out


def _spurts(sounds: Sequence[_Sound], clears: Sequence[float]) -> list[tuple[_Sound, float]]:
    """Talk spurts: (the sound that starts each, when the spurt ends)."""
    spurts: list[tuple[_Sound, float]] = []
    for sound in sounds:
        if spurts:
            first, end = spurts[-1]
            cleared = any(end - SPURT_GAP_MS <= c <= sound.start for c in clears)
            if sound.start - end < SPURT_GAP_MS and not cleared:
                spurts[-1] = (first, max(end, sound.end))
                continue
        spurts.append((sound, sound.end))
    return spurts


def _real(sent_ms: Sequence[float], media_ms: float) -> float | None:
    """The generator's time of media time ``media_ms`` (frame send times, interpolated)."""
    index = int(media_ms // 20)
    if index >= len(sent_ms):
        return None
    return sent_ms[index] + media_ms - index * 20


def analyze_call(script: Script, record: dict[str, Any]) -> CallTurns:
    """The turn-taking of one call (see the module docstring)."""
    sent = record["sent_ms"]
    clears = sorted(record.get("clears_ms") or [])
    spurts = _spurts(_sounds(record), clears)
    out = CallTurns()
    spoken = []
    for onset_ms, end_ms in script.utterances:
        onset, end = _real(sent, onset_ms), _real(sent, end_ms)
        if onset is None or end is None:
            break  # the call ended before this utterance did
        spoken.append((onset, end))
    if spurts and spoken and spurts[0][0].start < spoken[0][0]:
        out.greeting_ms = spurts[0][0].arrival
    for k, (onset, end) in enumerate(spoken):
        following = spoken[k + 1][0] if k + 1 < len(spoken) else math.inf
        talking = next((s for s in spurts if s[0].start < onset < s[1]), None)
        if talking is not None:
            clear = next((c for c in clears if c >= onset), None)
            if clear is not None and clear - onset <= BARGE_IN_WINDOW_MS:
                out.barge_in_ms.append(clear - onset)
            elif talking[1] > onset + BARGE_IN_WINDOW_MS:
                out.barge_ins_ignored += 1
        if any(onset <= s[0].start < end for s in spurts):
            out.premature += 1
        reply = next((s[0] for s in spurts if end <= s[0].arrival < following), None)
        if reply is None:
            out.no_reply += 1
            continue
        out.turn_sent_ms.append(reply.arrival - end)
        out.turn_heard_ms.append(reply.start - end)
    return out


@dataclass
class AgentStep:
    """A voice agent at ``calls`` concurrent calls of the :class:`Script`."""

    calls: int
    failed_calls: int
    errors: list[str]
    utterances: int
    """Utterances the callers finished speaking."""
    replies: int
    no_reply: int
    turn_sent_ms: list[float]
    turn_heard_ms: list[float]
    premature: int
    barge_ins: int
    """Onsets while the agent's audio played (opportunities to barge in)."""
    barge_in_ms: list[float]
    barge_ins_ignored: int
    greeting_ms: list[float]
    clears: int
    marks_echoed: int
    generator_lateness_p99_ms: float | None
    generator_cpu_percent: float
    generator_late: bool
    generator_late_reasons: list[str]
    server_cpu_percent: float | None = None
    server_rss_mb: float | None = None

    def percentile(self, name: str, q: float) -> float | None:
        """Percentile ``q`` of the list field ``name`` (``None`` if empty)."""
        values = getattr(self, name)
        return float(np.percentile(values, q)) if values else None


def agent_step(
    endpoint: Endpoint,
    calls: int,
    script: Script,
    *,
    audio: Path,
    generator_cpu: int | None,
) -> AgentStep:
    """Run ``calls`` calls of ``script`` (written to ``audio``) against ``endpoint``."""
    audio.write_bytes(script.ulaw)
    pids = endpoint.pids
    cpu_before = tree_cpu_seconds(pids) if pids else 0.0
    result = run_generator(
        endpoint,
        calls,
        script.duration_s,
        cpu=generator_cpu,
        audio=audio,
        record_replies=True,
    )
    server_cpu = tree_cpu_seconds(pids) - cpu_before if pids else None
    turns = [analyze_call(script, r) for r in result["call_records"] if r["sent_ms"]]
    spoken = sum(
        1
        for r in result["call_records"]
        for _, end in script.utterances
        if len(r["sent_ms"]) * 20 > end
    )
    return AgentStep(
        calls=calls,
        failed_calls=int(result["failed_calls"]),
        errors=list(result["errors"]),
        utterances=spoken,
        replies=sum(len(t.turn_sent_ms) for t in turns),
        no_reply=sum(t.no_reply for t in turns),
        turn_sent_ms=[round(v, 2) for t in turns for v in t.turn_sent_ms],
        turn_heard_ms=[round(v, 2) for t in turns for v in t.turn_heard_ms],
        premature=sum(t.premature for t in turns),
        barge_ins=sum(len(t.barge_in_ms) + t.barge_ins_ignored for t in turns),
        barge_in_ms=[round(v, 2) for t in turns for v in t.barge_in_ms],
        barge_ins_ignored=sum(t.barge_ins_ignored for t in turns),
        greeting_ms=[t.greeting_ms for t in turns if t.greeting_ms is not None],
        clears=int(result["clears"]),
        marks_echoed=int(result["marks_echoed"]),
        generator_lateness_p99_ms=result["send_lateness_p99_ms"],
        generator_cpu_percent=100 * float(result["steady_cpu_share"] or result["cpu_share"]),
        generator_late=bool(result["generator_late"]),
        generator_late_reasons=list(result["generator_late_reasons"]),
        server_cpu_percent=(
            100 * server_cpu / float(result["wall_s"]) if server_cpu is not None else None
        ),
        server_rss_mb=tree_rss_bytes(pids) / 2**20 if pids else None,
    )
