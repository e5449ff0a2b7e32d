"""Tests for engine.transport.http1: whole requests out of a connection's bytes (sans-IO)."""

from __future__ import annotations

import pytest

from engine.errors import BadRequest
from engine.transport.http1 import RequestReader, simple_response

FORM = b"CallSid=CA1&From=%2B1555"
POST = (
    b"POST /twilio/voice?pipeline=echo HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
    b"X-Twilio-Signature: abc=\r\nContent-Length: %d\r\n\r\n" % len(FORM)
) + FORM
GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
UPGRADE = (
    b"GET /twilio/media HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
CHUNKED = (
    b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n"
)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@pytest.mark.parametrize("size", [1, 3, 17, 1000])
@pytest.mark.parametrize(
    ("raw", "method", "target", "upgrade"),
    [
        (POST, "POST", "/twilio/voice?pipeline=echo", False),
        (GET, "GET", "/healthz", False),
        (UPGRADE, "GET", "/twilio/media", True),
        (CHUNKED, "POST", "/twilio/status", False),
    ],
)
def test_a_request_comes_out_whole_whatever_the_chunking(
    raw: bytes, method: str, target: str, upgrade: bool, size: int
) -> None:
    reader = RequestReader()
    requests = []
    for piece in chunked(raw, size):
        assert not requests
        reader.feed(piece)
        request = reader.next_request()
        if request is not None:
            requests.append(request)
    (request,) = requests
    assert (request.method, request.target, request.raw) == (method, target, raw)
    assert request.is_websocket_upgrade is upgrade
    assert request.path == target.partition("?")[0]
    assert not reader.pending


def test_headers_are_lowercased_and_the_query_split_off() -> None:
    reader = RequestReader()
    reader.feed(POST)
    request = reader.next_request()
    assert request is not None
    assert request.headers["x-twilio-signature"] == "abc="
    assert request.query == "pipeline=echo"


def test_pipelined_requests_come_out_one_by_one() -> None:
    reader = RequestReader()
    reader.feed(POST + GET + POST[:10])
    first, second = reader.next_request(), reader.next_request()
    assert first is not None and first.raw == POST
    assert second is not None and second.raw == GET
    assert reader.next_request() is None
    assert reader.pending  # the third one has begun
    reader.feed(POST[10:])
    third = reader.next_request()
    assert third is not None and third.raw == POST


def test_what_follows_an_upgrade_stays_buffered_for_the_websocket() -> None:
    reader = RequestReader()
    frames = b"\x81\x85\x00\x00\x00\x00hello"
    reader.feed(UPGRADE + frames)
    request = reader.next_request()
    assert request is not None and request.raw == UPGRADE
    assert reader.buffered() == frames
    assert not reader.pending


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 20000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 20000, 431),  # not even finished
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n" + b"a" * 70000,
            413,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    ],
)
def test_bad_requests_are_refused_with_the_status_that_says_why(raw: bytes, status: int) -> None:
    reader = RequestReader()
    reader.feed(raw)
    with pytest.raises(BadRequest) as refused:
        reader.next_request()
    assert refused.value.http_status == status


def test_a_simple_response_closes_and_counts_its_body() -> None:
    response = simple_response(408, "too slow\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"Connection: close" in head
    assert b"Content-Length: 9" in head
    assert body == b"too slow\n"
