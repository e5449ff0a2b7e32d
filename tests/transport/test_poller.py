"""Tests for engine.transport.poller: one edge-triggered watch for many sockets."""

from __future__ import annotations

import socket

import pytest
import trio

from engine.transport.poller import Poller


def pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return ours, theirs


async def test_a_waiting_reader_is_woken_when_its_socket_gets_data() -> None:
    poller = Poller()
    ours, theirs = pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        poller.watch(ours.fileno())
        await poller.wait_readable(ours.fileno())  # watched: checked once at once
        with trio.move_on_after(0.2) as idle:
            await poller.wait_readable(ours.fileno())
        assert idle.cancelled_caught  # nothing arrived: it waits
        theirs.send(b"frame")
        with trio.fail_after(2):
            await poller.wait_readable(ours.fileno())
        assert ours.recv(100) == b"frame"
        nursery.cancel_scope.cancel()


async def test_data_arriving_while_nobody_waits_is_not_lost() -> None:
    poller = Poller()
    ours, theirs = pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        poller.watch(ours.fileno())
        await poller.wait_readable(ours.fileno())
        theirs.send(b"early")
        await trio.sleep(0.05)  # the poller sees the edge with no reader waiting
        with trio.fail_after(2):
            await poller.wait_readable(ours.fileno())
        assert ours.recv(100) == b"early"
        nursery.cancel_scope.cancel()


async def test_mark_ready_makes_the_next_wait_return_for_an_undrained_socket() -> None:
    poller = Poller()
    ours, theirs = pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        poller.watch(ours.fileno())
        await poller.wait_readable(ours.fileno())
        theirs.send(b"x" * 1000)
        with trio.fail_after(2):
            await poller.wait_readable(ours.fileno())
        assert ours.recv(10) == b"x" * 10  # no new edge will come for the rest
        poller.mark_ready(ours.fileno())
        with trio.fail_after(2):
            await poller.wait_readable(ours.fileno())
        assert ours.recv(2000) == b"x" * 990
        nursery.cancel_scope.cancel()


async def test_many_sockets_each_wake_only_their_own_reader() -> None:
    poller = Poller()
    socks = [pair() for _ in range(20)]
    woken: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)

        async def reader(index: int, sock: socket.socket) -> None:
            poller.watch(sock.fileno())
            await poller.wait_readable(sock.fileno())
            await poller.wait_readable(sock.fileno())
            woken.append(index)

        for index, (ours, _) in enumerate(socks):
            nursery.start_soon(reader, index, ours)
        await trio.sleep(0.1)
        for index in (3, 7, 11):
            socks[index][1].send(b"!")
        await trio.sleep(0.2)
        assert sorted(woken) == [3, 7, 11]
        nursery.cancel_scope.cancel()


async def test_a_cancelled_wait_leaves_the_socket_to_the_next_waiter() -> None:
    poller = Poller()
    ours, theirs = pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        poller.watch(ours.fileno())
        await poller.wait_readable(ours.fileno())
        with trio.move_on_after(0.05):
            await poller.wait_readable(ours.fileno())
        theirs.send(b"later")
        with trio.fail_after(2):
            await poller.wait_readable(ours.fileno())
        nursery.cancel_scope.cancel()


async def test_forgetting_a_socket_wakes_its_reader_and_further_waits_fail() -> None:
    poller = Poller()
    ours, _theirs = pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        poller.watch(ours.fileno())
        await poller.wait_readable(ours.fileno())
        woken = trio.Event()

        async def reader() -> None:
            await poller.wait_readable(ours.fileno())
            woken.set()

        nursery.start_soon(reader)
        await trio.sleep(0.05)
        poller.forget(ours.fileno())
        with trio.fail_after(2):
            await woken.wait()
        with pytest.raises(trio.ClosedResourceError):
            await poller.wait_readable(ours.fileno())
        nursery.cancel_scope.cancel()


async def test_two_readers_on_one_socket_is_an_error() -> None:
    poller = Poller()
    ours, _theirs = pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        poller.watch(ours.fileno())
        await poller.wait_readable(ours.fileno())
        nursery.start_soon(poller.wait_readable, ours.fileno())
        await trio.sleep(0.05)
        with pytest.raises(trio.BusyResourceError):
            await poller.wait_readable(ours.fileno())
        nursery.cancel_scope.cancel()
