"""Tests for engine.transport.websocket: the media socket, driven directly."""

from __future__ import annotations

import socket

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from engine.errors import ConnectionClosed, MessageTooBig
from engine.transport.poller import Poller
from engine.transport.websocket import MediaWebSocket
from engine.transport.wsframe import client_text_frame

CLOSE_1000 = b"\x88\x82\0\0\0\0\x03\xe8"  # a client's close frame, code 1000, zero mask


def accepted() -> WSConnection:
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/twilio/media")))
    list(server.events())
    client.receive_data(server.send(AcceptConnection()))
    return server


async def test_messages_sent_with_the_close_are_delivered_before_it() -> None:
    ours, theirs = socket.socketpair()
    poller = Poller()
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        ws = MediaWebSocket(ours, accepted(), 65536, poller)
        # Twilio's last messages and its close frame, in one segment.
        theirs.sendall(client_text_frame("media") + client_text_frame("stop") + CLOSE_1000)
        with trio.fail_after(2):
            assert await ws.receive() == "media"
            assert await ws.receive() == "stop"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.receive()
        assert closed.value.code == 1000
        assert theirs.recv(100).startswith(b"\x88")  # the close was answered
        await ws.close()
        nursery.cancel_scope.cancel()


async def test_an_oversized_message_closes_with_1009_and_says_so() -> None:
    ours, theirs = socket.socketpair()
    poller = Poller()
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        ws = MediaWebSocket(ours, accepted(), 1000, poller)
        theirs.sendall(client_text_frame("x" * 5000))
        with trio.fail_after(2), pytest.raises(MessageTooBig) as refused:
            await ws.receive()
        assert refused.value.close_code == 1009
        nursery.cancel_scope.cancel()


async def test_a_read_that_fills_the_buffer_does_not_lose_the_rest() -> None:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    poller = Poller()
    messages = [f"message {i} " + "x" * 300 for i in range(600)]  # ~190 KB in one go
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        ws = MediaWebSocket(ours, accepted(), 65536, poller)
        theirs.sendall(b"".join(client_text_frame(m) for m in messages))
        with trio.fail_after(5):
            received = [await ws.receive() for _ in messages]
        assert received == messages
        nursery.cancel_scope.cancel()
