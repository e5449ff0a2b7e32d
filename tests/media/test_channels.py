"""Tests for engine.media.channels: FrameChannel, a bounded FIFO with drop-oldest for audio."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine.media.channels import ChannelStatistics, FrameChannel

# Items are (kind, n): kind "a" is audio (droppable), kind "c" is control (never dropped).
Item = tuple[str, int]


def is_audio(item: Item) -> bool:
    return item[0] == "a"


def parse(spec: str) -> list[Item]:
    """``"a1 c2 a3"`` -> ``[("a", 1), ("c", 2), ("a", 3)]``."""
    return [(word[0], int(word[1:])) for word in spec.split()]


def drain_nowait(channel: FrameChannel[Item]) -> list[Item]:
    out: list[Item] = []
    while True:
        try:
            out.append(channel.receive_nowait())
        except trio.WouldBlock:
            return out


# -- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1, -100])
def test_max_buffer_size_below_one_is_refused(size: int) -> None:
    with pytest.raises(ValueError):
        FrameChannel[int](size)


def test_max_buffer_size_one_is_accepted() -> None:
    channel = FrameChannel[int](1)
    channel.send_nowait(7)
    assert channel.receive_nowait() == 7


def test_initial_statistics() -> None:
    channel = FrameChannel[int](5)
    assert channel.statistics() == ChannelStatistics(
        current_buffer_used=0,
        max_buffer_size=5,
        dropped=0,
        sent=0,
        received=0,
        tasks_waiting_send=0,
        tasks_waiting_receive=0,
        closed=False,
    )


# -- FIFO and overflow policy ------------------------------------------------------------------


async def test_fifo_order_nowait_and_async(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[int](10)
        for i in range(10):
            channel.send_nowait(i)
        assert [channel.receive_nowait() for _ in range(5)] == [0, 1, 2, 3, 4]
        assert [await channel.receive() for _ in range(5)] == [5, 6, 7, 8, 9]
        with pytest.raises(trio.WouldBlock):
            channel.receive_nowait()


@pytest.mark.parametrize(
    ("capacity", "sends", "blocked", "expected", "dropped"),
    [
        # Audio only: the oldest audio makes room.
        (3, "a1 a2 a3 a4", "", "a2 a3 a4", 1),
        (3, "a1 a2 a3 a4 a5 a6", "", "a4 a5 a6", 3),
        (1, "a1 a2 a3", "", "a3", 2),
        # The oldest *droppable* item goes, even when a control item is older.
        (3, "a1 c1 a2 a3", "", "c1 a2 a3", 1),
        (3, "c1 a1 c2 a2", "", "c1 c2 a2", 1),
        (4, "c1 c2 a1 a2 a3", "", "c1 c2 a2 a3", 1),
        # Only control items queued: the arriving audio is itself dropped (and counted).
        (2, "c1 c2 a1", "", "c1 c2", 1),
        (2, "c1 c2 a1 a2 a3", "", "c1 c2", 3),
        # Control items never drop anything and are never dropped: they would block.
        (2, "c1 c2 c3", "c3", "c1 c2", 0),
        (2, "a1 a2 c1", "c1", "a1 a2", 0),
        (2, "a1 c1 c2", "c2", "a1 c1", 0),
        # Under capacity nothing happens.
        (5, "a1 c1 a2 c2", "", "a1 c1 a2 c2", 0),
    ],
)
def test_overflow_policy(
    capacity: int, sends: str, blocked: str, expected: str, dropped: int
) -> None:
    channel = FrameChannel[Item](capacity, droppable=is_audio)
    would_block: list[Item] = []
    for item in parse(sends):
        try:
            channel.send_nowait(item)
        except trio.WouldBlock:
            would_block.append(item)
        assert channel.statistics().current_buffer_used <= capacity
    assert would_block == parse(blocked)
    stats = channel.statistics()
    assert stats.dropped == dropped
    assert stats.current_buffer_used == len(parse(expected))
    assert stats.max_buffer_size == capacity
    assert drain_nowait(channel) == parse(expected)


def test_default_policy_drops_nothing() -> None:
    channel = FrameChannel[Item](2)
    channel.send_nowait(("a", 1))
    channel.send_nowait(("a", 2))
    with pytest.raises(trio.WouldBlock):
        channel.send_nowait(("a", 3))
    assert channel.statistics().dropped == 0
    assert drain_nowait(channel) == parse("a1 a2")


def test_sent_counter_is_consistent_with_buffer_and_receives() -> None:
    """``sent`` counts items that entered the buffer: received + evicted + still queued."""
    channel = FrameChannel[Item](3, droppable=is_audio)
    received = 0
    for step in ["a1", "a2", "a3", "a4", "r", "c1", "a5", "r", "r", "c2", "a6", "a7", "r"]:
        if step == "r":
            channel.receive_nowait()
            received += 1
        else:
            channel.send_nowait((step[0], int(step[1:])))
        stats = channel.statistics()
        assert stats.sent == received + stats.current_buffer_used + stats.dropped, step


def test_droppable_never_blocks_and_control_fills_free_room() -> None:
    channel = FrameChannel[Item](3, droppable=is_audio)
    channel.send_nowait(("a", 1))
    channel.send_nowait(("a", 2))
    channel.send_nowait(("c", 1))  # room left: accepted
    for i in range(3, 10):
        channel.send_nowait(("a", i))  # never raises
    stats = channel.statistics()
    assert stats.dropped == 7
    assert stats.sent == 10
    assert drain_nowait(channel) == parse("c1 a8 a9")


# -- blocking and waiting tasks ----------------------------------------------------------------


async def test_control_send_blocks_until_a_receive_makes_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[Item](1, droppable=is_audio)
        channel.send_nowait(("c", 1))
        finished: list[Item] = []

        async def sender() -> None:
            await channel.send(("c", 2))
            finished.append(("c", 2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            stats = channel.statistics()
            assert finished == []
            assert stats.tasks_waiting_send == 1
            assert stats.current_buffer_used == 1
            assert stats.sent == 1
            assert channel.receive_nowait() == ("c", 1)
            await trio.testing.wait_all_tasks_blocked()
            assert finished == [("c", 2)]
            stats = channel.statistics()
            assert stats.tasks_waiting_send == 0
            assert stats.sent == 2
        assert channel.receive_nowait() == ("c", 2)


async def test_blocked_senders_proceed_in_turn_and_keep_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[int](1)
        channel.send_nowait(0)

        async def sender(i: int) -> None:
            await channel.send(i)

        async with trio.open_nursery() as nursery:
            for i in range(1, 4):
                nursery.start_soon(sender, i)
                await trio.testing.wait_all_tasks_blocked()
            assert channel.statistics().tasks_waiting_send == 3
            got = []
            for _ in range(4):
                got.append(await channel.receive())
                await trio.testing.wait_all_tasks_blocked()
        assert got == [0, 1, 2, 3]
        assert channel.statistics().tasks_waiting_send == 0


async def test_audio_send_does_not_block_on_a_full_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[Item](1, droppable=is_audio)
        channel.send_nowait(("c", 1))
        with trio.fail_after(1):  # a droppable send returns at once (it is dropped)
            await channel.send(("a", 1))
        assert channel.statistics().dropped == 1
        assert channel.statistics().tasks_waiting_send == 0
        assert drain_nowait(channel) == [("c", 1)]


async def test_receive_waits_for_an_item(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[int](2)
        got: list[int] = []

        async def receiver() -> None:
            got.append(await channel.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            assert channel.statistics().tasks_waiting_receive == 1
            assert got == []
            channel.send_nowait(42)
            await trio.testing.wait_all_tasks_blocked()
            assert got == [42]
            assert channel.statistics().tasks_waiting_receive == 0


# -- close -------------------------------------------------------------------------------------


async def test_close_lets_the_receiver_drain_then_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[int](4)
        for i in range(3):
            channel.send_nowait(i)
        channel.close()
        assert channel.statistics().closed is True
        assert channel.receive_nowait() == 0
        assert await channel.receive() == 1
        assert channel.receive_nowait() == 2
        with pytest.raises(trio.EndOfChannel):
            channel.receive_nowait()
        with pytest.raises(trio.EndOfChannel):
            await channel.receive()


@pytest.mark.parametrize("item", [("a", 1), ("c", 1)])
async def test_send_after_close_raises(item: Item, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[Item](4, droppable=is_audio)
        channel.close()
        with pytest.raises(trio.ClosedResourceError):
            channel.send_nowait(item)
        with pytest.raises(trio.ClosedResourceError):
            await channel.send(item)
        assert channel.statistics().sent == 0


async def test_async_iteration_ends_at_close(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[int](4)
        for i in range(3):
            channel.send_nowait(i)
        channel.close()
        assert [i async for i in channel] == [0, 1, 2]


async def test_async_iteration_with_backpressure_gets_everything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[int](3)

        async def producer() -> None:
            for i in range(200):
                await channel.send(i)
            channel.close()

        got: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            async for item in channel:
                got.append(item)
                if item % 7 == 0:
                    await trio.lowlevel.checkpoint()
        assert got == list(range(200))


async def test_close_wakes_a_waiting_receiver_with_end_of_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[int](2)
        outcome: list[str] = []

        async def receiver() -> None:
            try:
                await channel.receive()
            except trio.EndOfChannel:
                outcome.append("end")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            channel.close()
        assert outcome == ["end"]
        assert channel.statistics().tasks_waiting_receive == 0


async def test_close_wakes_waiting_senders_with_closed_resource_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[int](1)
        channel.send_nowait(0)
        outcome: list[int] = []

        async def sender(i: int) -> None:
            try:
                await channel.send(i)
            except trio.ClosedResourceError:
                outcome.append(i)

        async with trio.open_nursery() as nursery:
            for i in (1, 2, 3):
                nursery.start_soon(sender, i)
            await trio.testing.wait_all_tasks_blocked()
            assert channel.statistics().tasks_waiting_send == 3
            channel.close()
        assert sorted(outcome) == [1, 2, 3]
        stats = channel.statistics()
        assert stats.tasks_waiting_send == 0
        assert stats.closed is True
        # What was queued before close is still delivered.
        assert channel.receive_nowait() == 0
        with pytest.raises(trio.EndOfChannel):
            channel.receive_nowait()


# -- cancellation safety -----------------------------------------------------------------------


async def test_cancelled_receive_never_loses_items_tiny_deadlines() -> None:
    """Receives under deadlines of 0 and a few microseconds: every item exactly once, in order."""
    channel = FrameChannel[int](4)
    count = 500

    async def producer() -> None:
        for i in range(count):
            await channel.send(i)
            if i % 3 == 0:
                await trio.lowlevel.checkpoint()
        channel.close()

    timeouts = [0, 0, 1e-9, 1e-6, 0, 1e-5, 1e-4]
    received: list[int] = []
    cancelled = 0
    # fail_after only turns a lost wake-up (a hang) into a failure; nothing here is timed.
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            attempt = 0
            while True:
                with trio.move_on_after(timeouts[attempt % len(timeouts)]) as scope:
                    try:
                        received.append(await channel.receive())
                    except trio.EndOfChannel:
                        break
                cancelled += scope.cancelled_caught
                attempt += 1
    assert received == list(range(count))
    assert cancelled > 0  # the test did exercise cancelled receives


async def test_cancelled_receive_never_loses_items_mock_clock(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Deadlines and sends falling on the same virtual instants, many times over."""
    mock_clock.autojump_threshold = 0
    channel = FrameChannel[int](2)
    count = 400

    async def producer() -> None:
        for i in range(count):
            await trio.sleep((i % 5) * 0.001)
            await channel.send(i)
        channel.close()

    received: list[int] = []
    cancelled = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        attempt = 0
        while True:
            assert trio.current_time() < 1000, "lost wake-up: the producer never finished"
            with trio.move_on_after((attempt % 4) * 0.001) as scope:
                try:
                    received.append(await channel.receive())
                except trio.EndOfChannel:
                    break
            cancelled += scope.cancelled_caught
            attempt += 1
    assert received == list(range(count))
    assert cancelled > 0


async def _receive_into(
    channel: FrameChannel[int], scope: trio.CancelScope, got: list[int]
) -> None:
    with scope:
        got.append(await channel.receive())


@pytest.mark.parametrize("cancel_first", [False, True])
async def test_receive_woken_and_cancelled_in_one_step_never_loses_the_item(
    cancel_first: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """A parked receiver is handed an item and cancelled in the same step: never lost."""
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[int](2)
        got: list[int] = []
        scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_receive_into, channel, scope, got)
            await trio.testing.wait_all_tasks_blocked()
            if cancel_first:
                scope.cancel()
            channel.send_nowait(1)
            scope.cancel()
        rest = [channel.receive_nowait() for _ in range(channel.statistics().current_buffer_used)]
        assert got + rest == [1]
        assert channel.statistics().tasks_waiting_receive == 0


async def _send_from(channel: FrameChannel[int], scope: trio.CancelScope, done: list[bool]) -> None:
    with scope:
        await channel.send(1)
        done.append(True)


@pytest.mark.parametrize("cancel_first", [False, True])
async def test_send_given_room_and_cancelled_in_one_step_is_sent_iff_it_returned(
    cancel_first: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """A parked sender is given room and cancelled in the same step: sent exactly when it says."""
    with trio.fail_after(60):  # virtual time: a deadlock fails instead of hanging
        channel = FrameChannel[int](1)
        channel.send_nowait(0)
        returned: list[bool] = []
        scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_send_from, channel, scope, returned)
            await trio.testing.wait_all_tasks_blocked()
            if cancel_first:
                scope.cancel()
            assert channel.receive_nowait() == 0
            scope.cancel()
        rest = [channel.receive_nowait() for _ in range(channel.statistics().current_buffer_used)]
        assert rest == ([1] if returned else [])
        assert returned == ([] if cancel_first else [True])
        assert channel.statistics().tasks_waiting_send == 0


async def test_cancelled_sends_never_duplicate_or_lose_items(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A sender retrying after each cancelled send: the receiver sees every item exactly once."""
    mock_clock.autojump_threshold = 0
    channel = FrameChannel[int](1)
    count = 300
    cancelled = 0

    async def producer() -> None:
        nonlocal cancelled
        i = 0
        attempt = 0
        while i < count:
            with trio.move_on_after((attempt % 3) * 0.001) as scope:
                await channel.send(i)
                i += 1
            cancelled += scope.cancelled_caught
            attempt += 1
        channel.close()

    received: list[int] = []
    with trio.fail_after(1000):  # virtual time: a lost wake-up fails instead of hanging
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            async for item in channel:
                received.append(item)
                await trio.sleep((item % 4) * 0.001)
    assert received == list(range(count))
    assert cancelled > 0
