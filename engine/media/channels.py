"""Bounded in-memory channels with an explicit overflow policy.

Every hop between a call's tasks goes through a :class:`FrameChannel`: a FIFO with a fixed
capacity. When it is full, a *droppable* item (live audio) makes room by discarding the oldest
droppable item already queued — late audio is worthless, and the count of what was dropped is kept.
Any other item (control: speech events, marks, hang-up) never drops: its sender waits for room.
The API follows trio's memory channels: ``send``/``send_nowait``, ``receive``/``receive_nowait``,
``close``, ``statistics()``, and async iteration.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

__all__ = ["ChannelStatistics", "FrameChannel"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """A snapshot of a channel, in the spirit of ``trio.MemoryChannelStatistics``."""

    current_buffer_used: int
    max_buffer_size: int
    dropped: int
    sent: int
    received: int
    tasks_waiting_send: int
    tasks_waiting_receive: int
    closed: bool


class FrameChannel(Generic[T]):
    """A bounded FIFO shared by one or more senders and one receiver.

    ``droppable(item)`` decides which items may be discarded (oldest first) when the channel is
    full; with the default nothing is droppable and a full channel makes senders wait.
    """

    def __init__(
        self, max_buffer_size: int, droppable: Callable[[T], bool] = lambda _item: False
    ) -> None:
        if max_buffer_size < 1:
            raise ValueError("max_buffer_size must be at least 1")
        self._max = max_buffer_size
        self._droppable = droppable
        self._items: deque[T] = deque()
        self._senders = trio.lowlevel.ParkingLot()
        self._receivers = trio.lowlevel.ParkingLot()
        self._dropped = 0
        self._sent = 0
        self._received = 0
        self._closed = False

    def statistics(self) -> ChannelStatistics:
        """The channel's counters and current fill."""
        return ChannelStatistics(
            current_buffer_used=len(self._items),
            max_buffer_size=self._max,
            dropped=self._dropped,
            sent=self._sent,
            received=self._received,
            tasks_waiting_send=self._senders.statistics().tasks_waiting,
            tasks_waiting_receive=self._receivers.statistics().tasks_waiting,
            closed=self._closed,
        )

    @property
    def buffered(self) -> int:
        """Items queued now (cheap: for per-frame checks, where :meth:`statistics` is not)."""
        return len(self._items)

    def _make_room(self, item: T) -> bool:
        if len(self._items) < self._max:
            return True
        if not self._droppable(item):
            return False
        for i, queued in enumerate(self._items):
            if self._droppable(queued):
                del self._items[i]
                self._dropped += 1
                return True
        # Only control items are queued: the newest audio is the one to drop.
        self._dropped += 1
        return False

    def send_nowait(self, item: T) -> None:
        """Queue ``item`` at once; raise ``trio.WouldBlock`` if a non-droppable item finds no room.

        A droppable item never blocks: it evicts the oldest droppable item, or is itself dropped
        (and counted) when only control items fill the channel.
        """
        if self._closed:
            raise trio.ClosedResourceError("channel is closed")
        if not self._make_room(item):
            if self._droppable(item):
                return
            raise trio.WouldBlock
        self._items.append(item)
        self._sent += 1
        self._receivers.unpark()

    async def send(self, item: T) -> None:
        """Queue ``item``, waiting for room if it is a control item and the channel is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            try:
                self.send_nowait(item)
            except trio.WouldBlock:
                await self._senders.park()
                parked = True
            else:
                if not parked:  # a wait was already a checkpoint; otherwise yield once
                    # Sent: a cancellation now must not make the caller think it was not.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return

    def receive_nowait(self) -> T:
        """Take the oldest item, or raise ``trio.WouldBlock`` (``EndOfChannel`` once closed)."""
        if self._items:
            item = self._items.popleft()
            self._received += 1
            self._senders.unpark()
            return item
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> T:
        """Take the oldest item, waiting for one; ``trio.EndOfChannel`` once closed and drained."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            try:
                item = self.receive_nowait()
            except trio.WouldBlock:
                await self._receivers.park()
                parked = True
            else:
                if not parked:  # a wait was already a checkpoint; otherwise yield once
                    # Taken: a cancellation now would lose the item, so it is shielded.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return item

    def close(self) -> None:
        """No more sends; the receiver drains what is queued, then gets ``EndOfChannel``."""
        self._closed = True
        self._receivers.unpark_all()
        self._senders.unpark_all()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                yield await self.receive()
            except trio.EndOfChannel:
                return
