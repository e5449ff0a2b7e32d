"""Tests for engine.media.playout: PlayoutCore (sans-IO, explicit ``now``) and run_playout."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from engine.media.channels import FrameChannel
from engine.media.frames import (
    Frame,
    HangUp,
    Interrupted,
    MarkEcho,
    PlayAudio,
    PlaybackDone,
    SpeechStarted,
)
from engine.media.outbound import run_playout
from engine.media.playout import PlayoutConfig, PlayoutCore, PlayoutStatistics
from engine.testing.twilio_side import OutboundEvent, OutClear, OutMark, OutMedia, parse_outbound

SID = "MZ0123456789abcdef0123456789abcdef"
BYTES_PER_MS = 8
FRAME = 160


def ulaw(n: int, seed: int = 0) -> bytes:
    """``n`` bytes of distinguishable "audio"."""
    return bytes((i * 31 + seed * 7 + i // 251) % 256 for i in range(n))


def decode(messages: list[str]) -> list[OutboundEvent]:
    events = [parse_outbound(m) for m in messages]
    assert all(e.stream_sid == SID for e in events)
    return events


def media_of(events: list[OutboundEvent]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, OutMedia)]


def marks_of(events: list[OutboundEvent]) -> list[str]:
    return [e.name for e in events if isinstance(e, OutMark)]


def media_ms(events: list[OutboundEvent]) -> float:
    return sum(len(p) for p in media_of(events)) / BYTES_PER_MS


def pump_every_frame(core: PlayoutCore, until: float, start: float = 0.0) -> list[OutboundEvent]:
    """Pump at every 20 ms from ``start`` to ``until`` inclusive (times computed, not summed)."""
    events: list[OutboundEvent] = []
    i = 0
    while (t := start + i / 50) <= until + 1e-9:
        events += decode(core.pump(t))
        i += 1
    return events


# -- pacing ------------------------------------------------------------------------------------


def test_pump_sends_exactly_the_lead_at_first() -> None:
    core = PlayoutCore(SID, PlayoutConfig(lead_ms=200, mark_interval_ms=100))
    core.enqueue(PlayAudio(ulaw(16000), "r"))  # 2 s
    events = decode(core.pump(0.0))
    frames = media_of(events)
    assert [len(f) for f in frames] == [FRAME] * 10  # 200 ms, not a frame more
    assert marks_of(events) == ["0.800", "0.1600"]
    # Each mark follows the audio it marks: after the 5th and the 10th frame.
    kinds = ["m" if isinstance(e, OutMedia) else "k" for e in events]
    assert kinds == ["m"] * 5 + ["k"] + ["m"] * 5 + ["k"]
    assert core.pump(0.0) == []  # the lead is full


@pytest.mark.parametrize(
    ("times", "total_ms"),
    [
        ([0.0, 0.1], 300),
        ([0.0, 0.1, 0.2], 400),
        ([0.0, 0.04, 0.1, 0.18], 380),
        ([0.0, 0.01, 0.02], 220),  # a frame is never split: 190 ms of lead -> one more frame
        ([0.0, 0.2], 400),  # the lead ran out exactly at 0.2
        ([0.0, 0.25], 400),  # Twilio ran dry at 0.2: the lead restarts from now
        ([0.0, 1.8], 400),
    ],
)
def test_pump_tops_up_the_lead_as_time_passes(times: list[float], total_ms: int) -> None:
    core = PlayoutCore(SID, PlayoutConfig(lead_ms=200, mark_interval_ms=100))
    core.enqueue(PlayAudio(ulaw(16000), "r"))
    events: list[OutboundEvent] = []
    for t in times:
        events += decode(core.pump(t))
    assert media_ms(events) == total_ms
    # Marks every 100 ms of audio, named by generation and byte position.
    assert marks_of(events) == [f"0.{800 * k}" for k in range(1, total_ms // 100 + 1)]


def test_pump_after_a_tenth_of_a_second_lets_exactly_100_ms_out() -> None:
    core = PlayoutCore(SID, PlayoutConfig(lead_ms=200, mark_interval_ms=100))
    core.enqueue(PlayAudio(ulaw(16000), "r"))
    first = media_ms(decode(core.pump(0.0)))
    more = decode(core.pump(0.1))
    assert first == 200
    assert media_ms(more) == 100
    assert marks_of(more) == ["0.2400"]


def test_next_deadline_is_when_the_lead_drops_below_target() -> None:
    core = PlayoutCore(SID, PlayoutConfig(lead_ms=200))
    assert core.next_deadline(0.0) == math.inf  # nothing queued, nothing to mark
    core.enqueue(PlayAudio(ulaw(16000), "r"))
    assert core.next_deadline(0.0) == 0.0  # queued audio and no lead: now
    core.pump(0.0)
    core.pump(0.01)  # half a frame played: one more frame tops the lead up to 210 ms
    assert core.next_deadline(0.01) == pytest.approx(0.02, abs=1e-6)
    # Before the deadline pump has nothing to send.
    assert media_of(decode(core.pump(0.015))) == []
    # A deadline in the past is reported as now.
    assert core.next_deadline(0.5) == 0.5


@pytest.mark.parametrize(
    ("chunks", "config", "t0"),
    [
        ([16000], PlayoutConfig(), 0.0),
        ([8000], PlayoutConfig(), 12.345),
        ([1000, 37, 500], PlayoutConfig(), 0.0),
        ([1000, 37, 500, 4321], PlayoutConfig(lead_ms=60, mark_interval_ms=50), 3.3),
        ([800] * 7, PlayoutConfig(lead_ms=100, mark_interval_ms=100, drain_mark_ms=40), 0.98),
        ([333, 1, 159, 161], PlayoutConfig(lead_ms=40, mark_interval_ms=20, drain_mark_ms=30), 7.1),
    ],
)
def test_pump_at_each_next_deadline_makes_progress_and_plays_everything(
    chunks: list[int], config: PlayoutConfig, t0: float
) -> None:
    """The loop run_playout runs: sleep until next_deadline, pump. pump must have work there."""
    core = PlayoutCore(SID, config)
    audio = [ulaw(n, seed=k) for k, n in enumerate(chunks)]
    for k, data in enumerate(audio):
        core.enqueue(PlayAudio(data, f"l{k}"))
    t = t0
    events = decode(core.pump(t))
    for _ in range(10_000):
        deadline = core.next_deadline(t)
        if deadline == math.inf:
            break
        assert deadline >= t
        t = deadline
        out = core.pump(t)
        assert out, f"pump has nothing to send at next_deadline {t!r} (a busy loop)"
        events += decode(out)
    else:
        pytest.fail("never idle")
    assert b"".join(media_of(events)) == b"".join(audio)
    total = sum(chunks)
    assert marks_of(events)[-1] == f"0.{total}"


@pytest.mark.parametrize(
    "chunks",
    [[1000, 37, 500], [1, 2, 3], [160, 160, 1], [159], [161, 319, 4000, 7]],
)
def test_frames_are_at_most_160_bytes_and_carry_the_audio_unchanged(chunks: list[int]) -> None:
    core = PlayoutCore(SID)
    audio = [ulaw(n, seed=k) for k, n in enumerate(chunks)]
    for k, data in enumerate(audio):
        core.enqueue(PlayAudio(data, f"l{k}"))
    core.enqueue(PlayAudio(b"", "empty"))  # nothing to play: ignored
    events = pump_every_frame(core, until=2.0)
    frames = media_of(events)
    assert frames
    assert all(0 < len(f) <= FRAME for f in frames)
    assert b"".join(frames) == b"".join(audio)


@pytest.mark.parametrize(
    ("at", "label", "heard_ms", "dropped_ms"),
    [
        # Positions (bytes): a [0, 1000), b [1000, 1037), c [1037, 1537); all sent at 0.
        (0.0, "a", 0, 125),
        (0.06, "a", 60, 65),
        (0.1249, "a", 124, 1),
        (0.127, "b", 2, 2),
        (0.15, "c", 20, 42),
        (0.19, "c", 60, 2),
    ],
)
def test_labels_are_kept_through_framing(
    at: float, label: str, heard_ms: int, dropped_ms: int
) -> None:
    core = PlayoutCore(SID)
    for name, n in (("a", 1000), ("b", 37), ("c", 500)):
        core.enqueue(PlayAudio(ulaw(n), name))
    assert media_ms(decode(core.pump(0.0))) == 1537 / 8  # all within the 200 ms lead
    cut = core.barge_in(at)
    assert cut is not None
    interrupted = cut[1]
    assert interrupted.label == label
    assert interrupted.heard_ms == pytest.approx(heard_ms, abs=1)
    assert interrupted.dropped_ms == pytest.approx(dropped_ms, abs=1)


# -- the drain mark ----------------------------------------------------------------------------


def test_drain_mark_waits_for_drain_mark_ms_then_marks_the_end_once() -> None:
    core = PlayoutCore(SID, PlayoutConfig(mark_interval_ms=100, drain_mark_ms=40))
    core.enqueue(PlayAudio(ulaw(1000), "r"))  # 125 ms: one interval mark, then the tail
    events = decode(core.pump(0.0))
    assert media_ms(events) == 125
    assert marks_of(events) == ["0.800"]
    assert core.next_deadline(0.0) == pytest.approx(0.04)
    for t in (0.0, 0.01, 0.039):
        assert core.pump(t) == [], t
    assert marks_of(decode(core.pump(0.04))) == ["0.1000"]
    for t in (0.04, 0.05, 0.2, 1.0):
        assert core.pump(t) == [], t
    assert core.next_deadline(0.05) == math.inf
    assert core.statistics().marks_sent == 2


def test_drain_mark_counts_from_the_last_send() -> None:
    core = PlayoutCore(SID, PlayoutConfig(lead_ms=200, mark_interval_ms=100, drain_mark_ms=40))
    core.enqueue(PlayAudio(ulaw(400), "r"))
    assert marks_of(decode(core.pump(0.0))) == []
    assert core.pump(0.03) == []
    core.enqueue(PlayAudio(ulaw(300, seed=1), "r"))  # more arrives before the drain mark
    events = decode(core.pump(0.03))
    assert (media_ms(events), marks_of(events)) == (37.5, [])
    assert core.next_deadline(0.03) == pytest.approx(0.07)
    assert core.pump(0.06) == []  # 60 ms after the first send, but 30 ms after the last
    assert marks_of(decode(core.pump(0.07))) == ["0.700"]


def test_no_drain_mark_while_audio_is_still_queued() -> None:
    core = PlayoutCore(SID, PlayoutConfig(lead_ms=100, mark_interval_ms=1000, drain_mark_ms=40))
    core.enqueue(PlayAudio(ulaw(4000), "r"))  # 500 ms, far more than the lead
    events = decode(core.pump(0.0))
    assert marks_of(events) == []
    # Still queued at 0.05: topping up, but the reply has not run out, so no mark.
    events = decode(core.pump(0.05))
    assert media_of(events)
    assert marks_of(events) == []


# -- mark echoes -------------------------------------------------------------------------------


def play_all(core: PlayoutCore, audio: bytes, label: str, start: float = 0.0) -> list[str]:
    """Queue ``audio``, pump it all out (drain mark included); the mark names sent."""
    core.enqueue(PlayAudio(audio, label))
    names = marks_of(pump_every_frame(core, until=start + len(audio) / 8000 + 0.2, start=start))
    assert names[-1].endswith(f".{len(audio)}")
    return names


def test_final_mark_echo_reports_playback_done() -> None:
    core = PlayoutCore(SID)
    names = play_all(core, ulaw(8000), "hello")  # 1 s
    assert names == [f"0.{800 * k}" for k in range(1, 11)]
    for k, name in enumerate(names[:-1], start=1):
        assert core.on_mark(name, k * 0.1) is None
        assert core.is_playing(k * 0.1)
    assert core.on_mark(names[-1], 1.0) == PlaybackDone(label="hello", heard_ms=1000)
    assert not core.is_playing(1.0)
    assert core.idle_at() <= 1.0
    assert core.on_mark(names[-1], 1.01) is None  # a duplicate echo: done once
    assert core.barge_in(1.1) is None


def test_final_mark_echo_with_an_odd_length_tail() -> None:
    core = PlayoutCore(SID)
    names = play_all(core, ulaw(1000), "x")
    assert names == ["0.800", "0.1000"]
    assert core.on_mark("0.800", 0.1) is None
    assert core.on_mark("0.1000", 0.125) == PlaybackDone(label="x", heard_ms=125)


def test_echo_at_the_end_of_sent_audio_is_not_done_while_more_is_queued() -> None:
    core = PlayoutCore(SID, PlayoutConfig(mark_interval_ms=20))  # a mark after every frame
    core.enqueue(PlayAudio(ulaw(16000), "long"))
    names = marks_of(decode(core.pump(0.0)))
    assert names[-1] == f"0.{core.statistics().sent_ms * BYTES_PER_MS}"
    # Twilio played everything it had, but 1.8 s are still queued here.
    assert core.on_mark(names[-1], 0.25) is None
    assert core.is_playing(0.25)


def test_playback_done_counts_only_the_last_label() -> None:
    core = PlayoutCore(SID)
    core.enqueue(PlayAudio(ulaw(3200, seed=1), "A"))  # 400 ms
    core.enqueue(PlayAudio(ulaw(1600, seed=2), "B"))  # 200 ms
    names = marks_of(pump_every_frame(core, until=1.0))
    assert names[-1] == "0.4800"
    done = core.on_mark(names[-1], 0.6)
    assert done == PlaybackDone(label="B", heard_ms=200)
    assert core.statistics().heard_ms == 600


def test_is_playing_waits_for_the_final_echo_and_the_clock() -> None:
    core = PlayoutCore(SID)
    assert not core.is_playing(0.0)
    names = play_all(core, ulaw(1600), "r")  # 200 ms
    assert core.is_playing(0.1)
    assert core.is_playing(0.21)  # clock done, final echo still missing
    assert core.on_mark(names[-1], 0.2) is not None
    assert not core.is_playing(0.2)
    assert not core.is_playing(5.0)


def test_marks_of_an_older_generation_are_ignored() -> None:
    core = PlayoutCore(SID)
    core.enqueue(PlayAudio(ulaw(8000), "old"))
    old_names = marks_of(pump_every_frame(core, until=0.3))
    assert old_names
    assert core.barge_in(0.3) is not None
    new_names = play_all(core, ulaw(1000, seed=3), "new", start=0.3)
    assert all(n.startswith("1.") for n in new_names)
    echoed = core.statistics().marks_echoed
    # Twilio echoes the cleared marks too; one even names the new reply's end position.
    for name in [*old_names, "0.800", "0.1000"]:
        assert core.on_mark(name, 0.4) is None
    assert core.statistics().marks_echoed == echoed
    assert core.is_playing(0.5)  # the old echoes did not end the new reply
    assert core.on_mark("1.800", 0.4) is None
    assert core.on_mark("1.1000", 0.43) == PlaybackDone(label="new", heard_ms=125)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "0",
        "0.",
        ".1000",
        "x.1000",
        "0.abc",
        "0.-1000",
        "0.+1000",
        "0.1000x",
        "0.10 00",
        "0.1e3",
        "0.1000.0",
        " 0.1000",
        "00.1000",
        "1.1000",
        "-1.1000",
        "0.²",  # isdigit() is true for superscripts, but int() refuses them
        "0.1000²",
        "hello",
    ],
)
def test_garbage_mark_names_are_ignored(name: str) -> None:
    core = PlayoutCore(SID)
    play_all(core, ulaw(1000), "r")
    before = core.statistics()
    assert core.on_mark(name, 0.2) is None
    assert core.statistics() == before
    assert core.is_playing(0.2)  # the real final echo is still awaited
    assert core.on_mark("0.1000", 0.2) == PlaybackDone(label="r", heard_ms=125)


# -- barge-in ----------------------------------------------------------------------------------


def test_barge_in_with_nothing_playing_returns_none() -> None:
    core = PlayoutCore(SID)
    assert core.barge_in(0.0) is None
    assert core.barge_in(10.0) is None
    assert core.statistics().clears == 0


def test_barge_in_after_playback_done_returns_none() -> None:
    core = PlayoutCore(SID)
    names = play_all(core, ulaw(800), "r")
    assert core.on_mark(names[-1], 0.1) is not None
    assert core.barge_in(0.2) is None


def test_barge_in_mid_reply_reports_heard_and_dropped() -> None:
    core = PlayoutCore(SID)
    core.enqueue(PlayAudio(ulaw(8000), "reply"))  # 1 s
    sent = pump_every_frame(core, until=0.3)
    assert media_ms(sent) >= 300
    cut = core.barge_in(0.3)
    assert cut is not None
    clear, interrupted = cut
    assert parse_outbound(clear) == OutClear(SID)
    assert interrupted.label == "reply"
    assert interrupted.heard_ms == pytest.approx(300, abs=20)
    assert interrupted.dropped_ms == pytest.approx(700, abs=20)
    assert 999 <= interrupted.heard_ms + interrupted.dropped_ms <= 1000
    # The queue is gone: nothing more is sent, now or later.
    assert core.statistics().queued_ms == 0
    for t in (0.3, 0.32, 0.5, 2.0):
        assert core.pump(t) == [], t
    assert core.next_deadline(0.3) == math.inf
    assert not core.is_playing(0.3)
    assert core.barge_in(0.31) is None


def test_barge_in_before_anything_was_sent() -> None:
    core = PlayoutCore(SID)
    core.enqueue(PlayAudio(ulaw(4000), "q"))
    cut = core.barge_in(0.0)
    assert cut is not None
    assert cut[1] == Interrupted(label="q", heard_ms=0, dropped_ms=500)
    assert core.pump(0.0) == []


def test_after_barge_in_new_audio_plays_under_generation_1() -> None:
    core = PlayoutCore(SID)
    core.enqueue(PlayAudio(ulaw(8000), "a"))
    pump_every_frame(core, until=0.3)
    assert core.barge_in(0.3) is not None
    new = ulaw(2000, seed=5)
    core.enqueue(PlayAudio(new, "b"))
    events = pump_every_frame(core, start=0.3, until=1.0)
    assert b"".join(media_of(events)) == new
    names = marks_of(events)
    assert names[0] == "1.800"  # positions restart with the generation
    assert all(n.startswith("1.") for n in names)
    assert names[-1] == "1.2000"
    for name in names[:-1]:
        assert core.on_mark(name, 0.6) is None
    assert core.on_mark(names[-1], 0.6) == PlaybackDone(label="b", heard_ms=250)


@pytest.mark.parametrize(
    ("late", "plays"),
    [
        ("a", False),  # the rest of the cut reply, still trickling in: dropped
        ("b", True),  # a new reply
        ("", True),  # unlabelled audio is never taken for the cut reply
    ],
)
def test_audio_of_the_cut_reply_arriving_after_the_cut_is_dropped(late: str, plays: bool) -> None:
    core = PlayoutCore(SID)
    core.enqueue(PlayAudio(ulaw(8000), "a"))
    pump_every_frame(core, until=0.3)
    assert core.barge_in(0.3) is not None
    core.enqueue(PlayAudio(ulaw(800, seed=3), late))
    assert core.statistics().queued_ms == (100 if plays else 0)


def test_a_new_label_ends_the_drop_so_the_cut_label_may_come_back() -> None:
    core = PlayoutCore(SID)
    core.enqueue(PlayAudio(ulaw(800), "a"))
    assert core.barge_in(0.0) is not None
    core.enqueue(PlayAudio(ulaw(800), "a"))
    core.enqueue(PlayAudio(ulaw(800), "b"))
    core.enqueue(PlayAudio(ulaw(800), "a"))
    assert core.statistics().queued_ms == 200


@pytest.mark.parametrize(
    ("queued_ms", "pending_ms", "room"),
    [(0, 0, True), (1990, 0, True), (2000, 0, False), (1000, 999, True), (1000, 1000, False)],
)
def test_playout_has_room_below_max_queued(queued_ms: int, pending_ms: int, room: bool) -> None:
    core = PlayoutCore(SID, PlayoutConfig(max_queued_ms=2000))
    if queued_ms:
        core.enqueue(PlayAudio(ulaw(queued_ms * BYTES_PER_MS), "a"))
    assert core.has_room(pending_ms * BYTES_PER_MS) is room


def test_barge_in_counts_only_the_current_label() -> None:
    core = PlayoutCore(SID)
    core.enqueue(PlayAudio(ulaw(3200, seed=1), "A"))  # 400 ms
    core.enqueue(PlayAudio(ulaw(3200, seed=2), "B"))  # 400 ms
    pump_every_frame(core, until=0.6)
    cut = core.barge_in(0.6)  # 200 ms into B
    assert cut is not None
    interrupted = cut[1]
    assert interrupted.label == "B"
    assert interrupted.heard_ms == pytest.approx(200, abs=20)
    assert interrupted.dropped_ms == pytest.approx(200, abs=20)
    assert core.statistics().heard_ms == pytest.approx(600, abs=20)


def test_barge_in_while_the_first_label_plays_and_the_second_is_queued() -> None:
    core = PlayoutCore(SID)
    core.enqueue(PlayAudio(ulaw(3200, seed=1), "A"))
    core.enqueue(PlayAudio(ulaw(3200, seed=2), "B"))
    pump_every_frame(core, until=0.1)
    cut = core.barge_in(0.1)
    assert cut is not None
    interrupted = cut[1]
    assert interrupted.label == "A"
    assert interrupted.heard_ms == pytest.approx(100, abs=20)
    assert interrupted.dropped_ms == pytest.approx(300, abs=20)  # the rest of A, not B


def test_barge_in_uses_the_echo_anchored_clock() -> None:
    """A late echo moves the clock: heard is measured from Twilio's actual position."""
    core = PlayoutCore(SID, PlayoutConfig(lead_ms=1000))
    core.enqueue(PlayAudio(ulaw(8000), "r"))
    core.pump(0.0)  # all 1 s out at once (lead 1 s)
    # Twilio started late: the 100 ms mark comes back at 0.3 s, so at 0.4 s 200 ms have played.
    assert core.on_mark("0.800", 0.3) is None
    cut = core.barge_in(0.4)
    assert cut is not None
    assert cut[1].heard_ms == pytest.approx(200, abs=20)
    assert cut[1].dropped_ms == pytest.approx(800, abs=20)


# -- statistics --------------------------------------------------------------------------------


def test_statistics_counters() -> None:
    core = PlayoutCore(SID, PlayoutConfig(lead_ms=200, mark_interval_ms=100, drain_mark_ms=40))
    assert core.statistics() == PlayoutStatistics(
        sent_ms=0, heard_ms=0, marks_sent=0, marks_echoed=0, clears=0, queued_ms=0
    )
    core.enqueue(PlayAudio(ulaw(1000), "a"))
    assert core.statistics().queued_ms == 125
    names = marks_of(decode(core.pump(0.0)))
    stats = core.statistics()
    assert (stats.sent_ms, stats.queued_ms, stats.marks_sent) == (125, 0, 1)
    names += marks_of(decode(core.pump(0.04)))
    assert core.statistics().marks_sent == 2
    core.on_mark(names[0], 0.1)
    core.on_mark(names[1], 0.125)
    stats = core.statistics()
    assert (stats.marks_echoed, stats.heard_ms) == (2, 125)

    core.enqueue(PlayAudio(ulaw(16000), "b"))  # 2 s
    assert core.statistics().queued_ms == 2000
    events = decode(core.pump(1.0))
    sent_ms = media_ms(events)
    assert sent_ms >= 200
    stats = core.statistics()
    assert stats.sent_ms == 125 + sent_ms
    assert stats.queued_ms == 2000 - sent_ms
    assert stats.marks_sent == 2 + len(marks_of(events))
    core.barge_in(1.1)
    stats = core.statistics()
    assert stats.clears == 1
    assert stats.queued_ms == 0
    assert stats.heard_ms == pytest.approx(125 + 100, abs=2)
    assert stats.sent_ms == 125 + sent_ms  # sent stays sent
    core.on_mark("0.1600", 1.2)  # an echo of a cleared mark is not counted
    assert core.statistics().marks_echoed == 2


# -- run_playout with a virtual clock ----------------------------------------------------------


class GuardedInbox(FrameChannel[Frame]):
    """The playout inbox, failing (rather than hanging) if run_playout spins at one instant."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._spin_at = -1.0
        self._spins = 0

    async def receive(self) -> Frame:
        now = trio.current_time()
        if now == self._spin_at:
            self._spins += 1
            assert self._spins < 1000, f"run_playout busy-loops at virtual time {now!r}"
        else:
            self._spin_at, self._spins = now, 0
        return await super().receive()


class FakeTwilio:
    """Plays what it is sent in virtual time and echoes marks when the audio before them played.

    On ``clear`` it drops its buffer and echoes every pending mark at once (§1.3).
    """

    def __init__(self, inbox: FrameChannel[Frame], nursery: trio.Nursery) -> None:
        self.inbox = inbox
        self.nursery = nursery
        self.log: list[tuple[float, OutboundEvent]] = []
        self.play_end = 0.0
        self.played = 0  # bytes of media that will have played (not cleared)
        self.pending: dict[str, trio.CancelScope] = {}
        self.ahead: list[float] = []  # audio queued at Twilio after each media message (s)

    async def send(self, message: str) -> None:
        now = trio.current_time()
        event = parse_outbound(message)
        assert event.stream_sid == SID
        self.log.append((now, event))
        match event:
            case OutMedia(payload=payload):
                self.play_end = max(now, self.play_end) + len(payload) / 8000
                self.ahead.append(self.play_end - now)
            case OutMark(name=name):
                scope = trio.CancelScope(deadline=max(now, self.play_end))
                self.pending[name] = scope
                self.nursery.start_soon(self._echo, name, scope)
            case OutClear():
                self.play_end = now
                for scope in list(self.pending.values()):
                    scope.cancel()

    async def _echo(self, name: str, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_forever()
        del self.pending[name]
        await self.inbox.send(MarkEcho(name))

    def events(self) -> list[OutboundEvent]:
        return [e for _, e in self.log]

    def times_of(self, kind: type) -> list[float]:
        return [t for t, e in self.log if isinstance(e, kind)]


class Call:
    """run_playout wired to a FakeTwilio, a to_stage channel and a hang-up recorder."""

    def __init__(self, nursery: trio.Nursery, config: PlayoutConfig | None = None) -> None:
        self.core = PlayoutCore(SID, config)
        self.inbox = GuardedInbox(64)
        self.to_stage: FrameChannel[Frame] = FrameChannel(64)
        self.twilio = FakeTwilio(self.inbox, nursery)
        self.hang_ups: list[tuple[float, HangUp]] = []
        self.finished = trio.Event()
        nursery.start_soon(self._run)

    async def _run(self) -> None:
        await run_playout(self.core, self.inbox, self.twilio.send, self.to_stage, self._hang_up)
        self.finished.set()

    def _hang_up(self, frame: HangUp) -> None:
        self.hang_ups.append((trio.current_time(), frame))


async def test_run_playout_plays_and_reports_playback_done(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    audio = ulaw(8000)  # 1 s
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            call = Call(nursery)
            start = trio.current_time()
            await call.inbox.send(PlayAudio(audio, "hello"))
            done = await call.to_stage.receive()
            done_at = trio.current_time()
            nursery.cancel_scope.cancel()
    assert done == PlaybackDone(label="hello", heard_ms=1000)
    events = call.twilio.events()
    assert b"".join(media_of(events)) == audio
    assert done_at - start == pytest.approx(1.0, abs=0.05)  # virtual time: when it has played
    # Paced: never more than the lead (plus one frame) queued at Twilio.
    assert max(call.twilio.ahead) <= 0.2 + 0.02 + 1e-9
    assert max(call.twilio.times_of(OutMedia)) == pytest.approx(0.8, abs=0.03)


async def test_run_playout_hang_up_with_drain_waits_for_playback(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    audio = ulaw(8000)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            call = Call(nursery)
            await call.inbox.send(PlayAudio(audio, "bye"))
            await call.inbox.send(HangUp(reason="done", drain=True))
            await call.finished.wait()
            nursery.cancel_scope.cancel()
    assert b"".join(media_of(call.twilio.events())) == audio
    assert len(call.hang_ups) == 1
    hung_at, frame = call.hang_ups[0]
    assert frame == HangUp(reason="done", drain=True)
    assert hung_at >= call.twilio.play_end  # everything sent has played
    assert hung_at == pytest.approx(1.0, abs=0.05)
    assert call.to_stage.receive_nowait() == PlaybackDone(label="bye", heard_ms=1000)


async def test_run_playout_hang_up_without_drain_is_immediate(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            call = Call(nursery)
            await call.inbox.send(PlayAudio(ulaw(8000), "cut"))
            await trio.sleep(0.1)
            await call.inbox.send(HangUp(drain=False))
            await call.finished.wait()
            nursery.cancel_scope.cancel()
    assert [t for t, _ in call.hang_ups] == [pytest.approx(0.1, abs=0.001)]
    assert media_ms(call.twilio.events()) < 1000


async def test_run_playout_speech_started_sends_clear_and_interrupted(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            call = Call(nursery)
            await call.inbox.send(PlayAudio(ulaw(8000), "reply"))
            await trio.sleep(0.3)
            await call.inbox.send(SpeechStarted(timestamp=300, detected_at=300))
            interrupted = await call.to_stage.receive()
            await trio.sleep(2.0)  # cleared marks come back; nothing more may follow
            nursery.cancel_scope.cancel()
    assert isinstance(interrupted, Interrupted)
    assert interrupted.label == "reply"
    assert interrupted.heard_ms == pytest.approx(300, abs=20)
    assert interrupted.dropped_ms == pytest.approx(700, abs=20)
    clears = call.twilio.times_of(OutClear)
    assert clears == [pytest.approx(0.3, abs=0.001)]
    assert all(t <= clears[0] for t in call.twilio.times_of(OutMedia))  # no audio after it
    assert call.to_stage.statistics().current_buffer_used == 0  # no PlaybackDone for it
    assert call.core.statistics().clears == 1


async def test_run_playout_without_barge_in_ignores_speech(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    audio = ulaw(8000)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            call = Call(nursery, PlayoutConfig(barge_in=False))
            await call.inbox.send(PlayAudio(audio, "reply"))
            await trio.sleep(0.3)
            await call.inbox.send(SpeechStarted(timestamp=300, detected_at=300))
            done = await call.to_stage.receive()
            nursery.cancel_scope.cancel()
    assert done == PlaybackDone(label="reply", heard_ms=1000)
    assert call.twilio.times_of(OutClear) == []
    assert b"".join(media_of(call.twilio.events())) == audio


async def test_run_playout_new_reply_after_barge_in(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    second = ulaw(4000, seed=9)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            call = Call(nursery)
            await call.inbox.send(PlayAudio(ulaw(8000), "first"))
            await trio.sleep(0.3)
            await call.inbox.send(SpeechStarted(timestamp=300, detected_at=300))
            assert isinstance(await call.to_stage.receive(), Interrupted)
            await call.inbox.send(PlayAudio(second, "second"))
            done = await call.to_stage.receive()
            nursery.cancel_scope.cancel()
    assert done == PlaybackDone(label="second", heard_ms=500)
    events = call.twilio.events()
    after = events[events.index(OutClear(SID)) + 1 :]
    assert b"".join(media_of(after)) == second
    assert all(name.startswith("1.") for name in marks_of(after))


@pytest.mark.parametrize(
    "steps",
    [
        # (bytes of audio, label, seconds later, barge in first?)
        [(160, "echo", 0.02, False)] * 12,
        [(160, "a", 0.02, False), (80, "a", 0.02, False), (0, "a", 0.1, False)] * 3,
        [(160, "a", 0.02, False), (160, "a", 0.3, True), (160, "a", 0.02, False)],
        [(160, "a", 0.02, False), (160, "a", 0.02, True), (160, "b", 0.02, False)],
        [(320, "a", 0.02, False), (160, "a", 0.02, False), (160, "a", 0.08, False)],
    ],
)
def test_play_now_is_exactly_enqueue_then_pump(
    steps: list[tuple[int, str, float, bool]],
) -> None:
    config = PlayoutConfig(paced=False)
    fast, slow = PlayoutCore(SID, config), PlayoutCore(SID, config)
    now = 0.0
    for size, label, later, cut in steps:
        if cut:
            assert fast.barge_in(now) == slow.barge_in(now)
        audio = PlayAudio(bytes(range(size % 256)) * (size // 256) + bytes(size % 256), label)
        slow.enqueue(audio)
        assert fast.play_now(audio, now) == slow.pump(now)
        now += later
        assert fast.pump(now) == slow.pump(now)  # drain marks alike
        assert fast.next_deadline(now) == slow.next_deadline(now)
    assert fast.statistics() == slow.statistics()
