"""The front door of an in-process server: one port, and what it holds against idle, slow,
numerous or hostile peers while admitted calls go on."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from conftest import sentences, spoken, start_server, stop_server
from engine.admission import AdmissionConfig
from engine.server import ServerConfig, VoiceServer
from engine.testing import StreamRecord, open_inbound_call
from engine.transport.http import HttpLimits
from pipelines.echo import Echo

TOKEN = "front-door-token"


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[tuple[VoiceServer, str]]:
    options.setdefault("admission", AdmissionConfig(max_calls=None))
    server = VoiceServer(ServerConfig(stage_factory=Echo, auth_token=TOKEN, port=0, **options))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        yield server, url
        server.shutdown()


async def connect(url: str) -> trio.SocketStream:
    parts = urlsplit(url)
    return await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)


async def read_until_closed(stream: trio.SocketStream, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (fails after ``timeout``)."""
    data = b""
    with trio.fail_after(timeout):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


def assert_echoed_everything(record: StreamRecord) -> None:
    echoed = b"".join(payload for _, payload in record.received)
    assert len(echoed) > 0
    assert echoed == record.mic[: len(echoed)]
    assert len(record.mic) - len(echoed) <= 5 * 160


async def test_webhooks_health_metrics_and_media_share_one_port() -> None:
    async with running() as (server, url), httpx.AsyncClient() as http:
        assert (await http.get(f"{url}/healthz")).json()["status"] == "ok"
        assert "voice_engine_calls_active" in (await http.get(f"{url}/metrics")).text
        assert server.media_url == url.replace("http://", "ws://") + "/twilio/media"
        async with open_inbound_call(url, TOKEN) as call:
            await call.say(spoken(sentences()[0])[:8000])
        assert_echoed_everything(call.record)


async def test_a_connection_that_sends_nothing_is_closed() -> None:
    async with running(http=HttpLimits(idle_timeout=0.5)) as (_server, url):
        stream = await connect(url)
        started = trio.current_time()
        assert await read_until_closed(stream, 3) == b""
        assert 0.4 < trio.current_time() - started < 2


async def test_a_keep_alive_connection_that_goes_idle_is_closed() -> None:
    async with running(http=HttpLimits(idle_timeout=0.5)) as (_server, url):
        stream = await connect(url)
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await read_until_closed(stream, 3)
        assert answer.startswith(b"HTTP/1.1 200")  # answered, then closed once idle


async def test_a_request_whose_body_stalls_gets_408_and_is_closed() -> None:
    limits = HttpLimits(idle_timeout=5, request_timeout=0.5)
    async with running(http=limits) as (_server, url):
        stream = await connect(url)
        await stream.send_all(
            b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nCallSid="
        )
        answer = await read_until_closed(stream, 3)
        assert answer.startswith(b"HTTP/1.1 408")


async def test_beyond_max_connections_new_ones_get_503_and_admitted_calls_go_on() -> None:
    audio = spoken(sentences()[1])
    async with running(max_connections=4, http=HttpLimits(idle_timeout=30)) as (server, url):
        async with open_inbound_call(url, TOKEN) as call:  # one connection: the call
            idle = [await connect(url) for _ in range(3)]  # the door is now full
            extra = await connect(url)
            assert (await read_until_closed(extra, 2)).startswith(b"HTTP/1.1 503")
            await call.say(audio)
            assert server.door is not None
            assert server.door.statistics().refused["busy"] >= 1
            for stream in idle:
                await stream.aclose()
        assert_echoed_everything(call.record)
        # Room again: a new call goes through.
        async with open_inbound_call(url, TOKEN) as again:
            await again.say(audio[:4000])
        assert_echoed_everything(again.record)


async def test_garbage_and_unknown_upgrades_are_answered_and_closed() -> None:
    async with running() as (_server, url):
        stream = await connect(url)
        await stream.send_all(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert (await read_until_closed(stream, 2)).startswith(b"HTTP/1.1 400")
        stream = await connect(url)
        await stream.send_all(
            b"GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await read_until_closed(stream, 2)).startswith(b"HTTP/1.1 404")
        stream = await connect(url)  # the media path, unsigned
        await stream.send_all(
            b"GET /twilio/media HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await read_until_closed(stream, 2)).startswith(b"HTTP/1.1 403")


async def test_a_connection_reset_mid_request_harms_nothing() -> None:
    async with running() as (_server, url), httpx.AsyncClient() as http:
        parts = urlsplit(url)
        for _ in range(20):
            sock = socket.create_connection((parts.hostname, parts.port))
            sock.sendall(b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, mid-request
        assert (await http.get(f"{url}/healthz")).status_code == 200


async def test_running_out_of_descriptors_is_survived_quietly(tmp_path: Path) -> None:
    # A server allowed 128 descriptors but told to take 1000 connections: a flood of silent
    # connections exhausts its descriptors. It sheds what it cannot take, logs it once in a
    # while, keeps the call it carries whole, and takes new calls once the flood is gone.
    server = start_server(
        tmp_path,
        "echo",
        args=["--max-connections", "1000", "--max-calls", "unlimited"],
        max_open_files=128,
    )
    audio = spoken(sentences()[2])
    try:
        flood: list[socket.socket] = []
        parts = urlsplit(server.url)
        async with open_inbound_call(server.url, server.auth_token) as call:
            await call.pause(0.2)
            for _ in range(300):
                try:
                    flood.append(socket.create_connection((parts.hostname, parts.port), 1))
                except OSError:
                    break
            await call.say(audio)
            await call.pause(0.5)
            for sock in flood:
                sock.close()
        assert_echoed_everything(call.record)
        assert not call.record.closed_by_server
        await trio.sleep(0.5)  # the server notices the closed connections
        async with open_inbound_call(server.url, server.auth_token) as again:
            await again.say(audio[:4000])
        assert_echoed_everything(again.record)
    finally:
        assert stop_server(server) == 0, server.log()
    log = server.log()
    assert "Traceback" not in log, log
    refusals = log.count("connection refused (descriptors")
    assert 1 <= refusals <= 5, log  # logged once in a while, not per connection
