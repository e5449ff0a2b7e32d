"""The way out of a call: playout's task and fast lane around :class:`PlayoutCore`, in order.

Three small pieces, each with one job:

- :class:`OrderedWriter` — the socket's only door out: messages leave in the order they were
  written, whichever task wrote them; a writer that finds another one blocked on the socket
  adds its messages to that writer's batch and waits for it.
- :class:`Playout` — the playout task (:meth:`Playout.run`: pace queued audio to the lead,
  marks, barge-in, hang-up after the drain), driven in a call by the caller's own frames
  (:meth:`Playout.tick`: no timer per call), and its **fast lane**: unpaced audio (echo,
  speech-to-speech) and Twilio's mark echoes that find nothing ahead of them are handled by the
  calling task itself (:meth:`Playout.play_now`, :meth:`Playout.mark_now`), sparing the hop
  into the playout task; the task's timer is moved earlier when the fast lane needs it.
- :class:`RoomForAudio` — back-pressure for a stage that produces faster than real time: it
  waits in :meth:`RoomForAudio.reserve` while playout holds its fill.

:func:`run_playout` runs a :class:`Playout` over a plain one-message ``send``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Literal

import trio

from engine.media.channels import FrameChannel
from engine.media.frames import (
    Frame,
    HangUp,
    Interrupt,
    MarkEcho,
    PlayAudio,
    PlaybackDone,
    SpeechStarted,
)
from engine.media.playout import PlayoutCore

__all__ = ["OrderedWriter", "Playout", "RoomForAudio", "run_playout"]

SendMany = Callable[[list[str]], Awaitable[None]]
"""Writes text messages to the socket, in order."""


class OrderedWriter:
    """One call's outbound messages, in the order they were written."""

    def __init__(self, send_many: SendMany) -> None:
        self._send_many = send_many
        self._batch: list[str] = []
        self._busy = False
        self._done = trio.lowlevel.ParkingLot()

    async def write(self, messages: list[str]) -> None:
        """Send ``messages`` after everything written before them. Handed a ``send_many`` that
        returns without a checkpoint while the kernel takes the bytes, a write costs no task
        switch."""
        if not messages:
            return
        if self._busy:
            self._batch.extend(messages)
            await self._done.park()
            return
        self._busy = True
        try:
            await self._send_many(messages)
            while self._batch:
                batch, self._batch = self._batch, []
                await self._send_many(batch)
        finally:
            self._busy = False
            if self._done:
                self._done.unpark_all()


class RoomForAudio:
    """Back-pressure between a stage and playout (see ``PlayoutConfig.max_queued_ms``)."""

    def __init__(self, core: PlayoutCore) -> None:
        self._core = core
        self._in_flight = 0  # bytes reserved by the stage, not yet taken by playout
        self._waiting = trio.lowlevel.ParkingLot()

    async def reserve(self, size: int) -> None:
        """Wait until playout has room, then count ``size`` bytes as on their way."""
        while not self._core.has_room(self._in_flight):
            await self._waiting.park()
        self._in_flight += size

    def taken(self, size: int) -> None:
        """Playout took ``size`` reserved bytes from its inbox."""
        self._in_flight = max(0, self._in_flight - size)

    def update(self) -> None:
        """Playout sent audio: let waiting producers go if there is room now."""
        if self._waiting and self._core.has_room(self._in_flight):
            self._waiting.unpark_all()


class Playout:
    """The playout task of one call, and its fast lane.

    ``inbox`` carries :class:`PlayAudio`, :class:`SpeechStarted`, :class:`Interrupt`,
    :class:`MarkEcho` and :class:`HangUp`; :class:`~engine.media.frames.Interrupted` and
    :class:`PlaybackDone` go to ``to_stage``. :class:`SpeechStarted` cuts the audio only with
    ``barge_in`` configured (and while :attr:`barge_in` is on); :class:`Interrupt` (the
    stage's own barge-in) always does. ``pump`` is ``core.pump`` unless something observes it.
    """

    def __init__(
        self,
        core: PlayoutCore,
        inbox: FrameChannel[Frame],
        writer: OrderedWriter,
        to_stage: FrameChannel[Frame],
        on_hang_up: Callable[[HangUp], None],
        *,
        pump: Callable[[float], list[str]] | None = None,
        ticked: bool = False,
    ) -> None:
        """``ticked``: :meth:`tick` is called on every frame from the caller (every 20 ms for
        as long as the call lives), so the task sets no timers of its own (see :meth:`tick`)."""
        self.core = core
        self.room = RoomForAudio(core)
        self.barge_in = core.config.barge_in
        """Whether the caller's speech cuts the bot's audio now (off while a call winds down,
        so its closing notice is heard whole)."""
        self._inbox = inbox
        self._writer = writer
        self._to_stage = to_stage
        self._on_hang_up = on_hang_up
        self._pump = pump or core.pump
        self._ticked = ticked
        self._due = math.inf  # when pump next has something to send
        self._hang_up: HangUp | None = None  # a hang-up waiting for the audio to play out
        self._wait: trio.CancelScope | None = None  # the task's current wait, while it waits

    async def run(self) -> None:
        """The playout task: runs until the call hangs up or is cancelled."""
        core, inbox = self.core, self._inbox
        while True:
            now = trio.current_time()
            if self._hang_up is not None and not core.is_playing(now):
                self._on_hang_up(self._hang_up)
                return
            deadline = math.inf
            if not self._ticked:
                deadline = core.next_deadline(now)
                if self._hang_up is not None:
                    deadline = min(deadline, core.idle_at())
            frame: Frame | None = None
            with trio.CancelScope(deadline=deadline) as self._wait:
                frame = await inbox.receive()
            self._wait = None
            now = trio.current_time()
            match frame:
                case PlayAudio():
                    self.room.taken(len(frame.ulaw))
                    core.enqueue(frame)
                case MarkEcho(name=name):
                    done = core.on_mark(name, now)
                    if done is not None:
                        await self._to_stage.send(done)
                case SpeechStarted() | Interrupt():
                    if type(frame) is Interrupt or self.barge_in:
                        cut = core.barge_in(now)
                        if cut is not None:
                            await self._writer.write([cut[0]])
                            await self._to_stage.send(cut[1])
                case HangUp():
                    if not frame.drain:
                        self._on_hang_up(frame)
                        return
                    self._hang_up = frame
            await self._send_due(now)

    async def tick(self, now: float) -> None:
        """A frame from the caller arrived: send what has come due since the last one.

        Twilio sends a frame every 20 ms for as long as a call lives, so the caller's own
        frames are the call's clock: marks at the end of a reply, the lead topped up, a
        hang-up once its audio has played — each at most 20 ms late, with no timer per call
        (a timer costs the event loop far more than this check). A call whose frames stop is
        ended by its session's watchdog.
        """
        if now >= self._due:
            await self._send_due(now)
        if self._hang_up is not None and not self.core.is_playing(now):
            self._on_hang_up(self._hang_up)

    async def _send_due(self, now: float) -> None:
        await self._writer.write(self._pump(now))
        self._due = self.core.next_deadline(now)
        self.room.update()

    def _fast(self) -> bool:
        return (
            not self.core.config.paced and not self.core.queued_bytes and not self._inbox.buffered
        )

    async def play_now(self, audio: PlayAudio) -> bool:
        """Play unpaced ``audio`` from the calling task if nothing is ahead of it; ``False``
        (and nothing done) if it must go through playout's inbox."""
        if not self._fast():
            return False
        now = trio.current_time()
        core = self.core
        await self._writer.write(core.play_now(audio, now))
        self._due = core.next_deadline(now)
        if not self._ticked:  # the task keeps the time: the end-of-reply mark comes sooner
            wait = self._wait
            if wait is not None and self._due < wait.deadline:
                wait.deadline = self._due
        return True

    def mark_now(self, name: str) -> PlaybackDone | Literal[False] | None:
        """Take Twilio's echo of mark ``name`` in the calling task if nothing is ahead of it;
        ``False`` if it must go through playout's inbox, else what
        :meth:`~engine.media.playout.PlayoutCore.on_mark` returned."""
        if not self._fast():
            return False
        now = trio.current_time()
        done = self.core.on_mark(name, now)
        wait = self._wait
        if not self._ticked and wait is not None and self.core.idle_at() < wait.deadline:
            wait.deadline = now  # a hang-up waiting for the drain may go now
        return done


async def run_playout(
    core: PlayoutCore,
    inbox: FrameChannel[Frame],
    send: Callable[[str], Awaitable[None]],
    to_stage: FrameChannel[Frame],
    on_hang_up: Callable[[HangUp], None],
) -> None:
    """Run playout for one call until it hangs up or is cancelled, writing one message at a
    time with ``send``."""

    async def send_many(messages: list[str]) -> None:
        for message in messages:
            await send(message)

    await Playout(core, inbox, OrderedWriter(send_many), to_stage, on_hang_up).run()
