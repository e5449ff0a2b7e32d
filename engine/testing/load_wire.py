"""The load generator's WebSocket and Media Streams wire, sans-IO and built for speed.

Everything here runs tens of thousands of times a second in :mod:`engine.testing.load`, so it
works on ``bytes`` and does as little as it can:

* :func:`client_frame` frames a client message with an all-zero mask key. RFC 6455 requires a
  client to mask, and XOR with zero is a valid mask that leaves the payload as it is, so no
  per-byte masking work is done.
* :class:`ServerFrameDecoder` splits the server's (unmasked) byte stream into messages and control
  frames, refusing what RFC 6455 forbids a server to send.
* :class:`CallMessages` builds Twilio's messages for one call from templates: the ``media``
  message is three counters spliced between constant bytes and the frame's precomputed base64.
* :func:`read_outbound` pulls out of a server message only what the generator needs: the
  event, the ``media`` payload's base64 or the ``mark`` name. The exact shape the engine writes
  is read by slicing; anything else goes through :mod:`json` with the same checks.
"""

from __future__ import annotations

import binascii
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Final

from engine.testing import twilio_side

__all__ = [
    "CLEAR",
    "MARK",
    "MEDIA",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "CallMessages",
    "ServerFrameDecoder",
    "WireError",
    "b64_frames",
    "client_frame",
    "close_payload",
    "payload_size",
    "read_outbound",
]

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

_json_string = json.encoder.encode_basestring_ascii  # a str as json.dumps writes it
_ZERO_MASK: Final = b"\x00\x00\x00\x00"
_HEAD16: Final = struct.Struct(">BBH4x")  # FIN+opcode, MASK|126, 16-bit length, zero mask
_HEAD64: Final = struct.Struct(">BBQ4x")


class WireError(Exception):
    """The server sent bytes or a message a Twilio client would not accept."""


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final client frame carrying ``payload``, masked with the all-zero key."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, 0x80 | n)) + _ZERO_MASK + payload
    if n < 65536:
        return _HEAD16.pack(0x80 | opcode, 0xFE, n) + payload
    return _HEAD64.pack(0x80 | opcode, 0xFF, n) + payload


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame: the 2-byte status code, then the UTF-8 reason."""
    return code.to_bytes(2, "big") + reason.encode("utf-8")


class ServerFrameDecoder:
    """Splits the server's byte stream into ``(opcode, payload)`` pairs, sans-IO.

    Text and binary messages come out whole (fragments joined); ping, pong and close frames come
    out as they arrive, between them. Raises :class:`WireError` on a masked frame, RSV bits, an
    unknown opcode, a bad fragment sequence, a control frame over 125 bytes or fragmented, and
    a message over ``max_message`` bytes (so what it buffers stays bounded).
    """

    __slots__ = ("_buffer", "_fragments", "_fragments_size", "_max", "_message_opcode")

    def __init__(self, max_message: int = 1 << 20) -> None:
        self._buffer = b""
        self._max = max_message
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._message_opcode = 0  # opcode of the fragmented message in progress, 0 if none

    @property
    def idle(self) -> bool:
        """Whether the stream is at a frame boundary outside any fragmented message (so the
        next bytes may be read without the decoder)."""
        return not self._buffer and not self._message_opcode

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The messages and control frames ``data`` completes, in stream order."""
        buf = self._buffer + data if self._buffer else data
        end = len(buf)
        pos = 0
        out: list[tuple[int, bytes]] = []
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b1 & 0x80:
                raise WireError("the server masked a frame (RFC 6455 §5.1)")
            if b0 & 0x70:
                raise WireError("a frame with RSV bits set and no extension agreed")
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if length > self._max:
                raise WireError(f"a frame of {length} bytes, over the {self._max}-byte limit")
            stop = start + length
            if stop > end:
                break
            pos = stop
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if fin and opcode == OP_TEXT and not self._message_opcode:
                out.append((OP_TEXT, buf[start:stop]))  # the common case
            else:
                self._other(out, opcode, bool(fin), buf[start:stop])
        self._buffer = buf[pos:] if pos < end else b""
        if len(self._buffer) > self._max + 14:
            raise WireError("an incomplete frame over the size limit")
        return out

    def _other(self, out: list[tuple[int, bytes]], opcode: int, fin: bool, payload: bytes) -> None:
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise WireError(f"reserved control opcode {opcode:#x}")
            if not fin or len(payload) > 125:
                raise WireError("a fragmented or oversized control frame")
            out.append((opcode, payload))
        elif opcode == OP_CONT:
            if not self._message_opcode:
                raise WireError("a continuation frame with no message to continue")
            self._append(payload)
            if fin:
                out.append((self._message_opcode, b"".join(self._fragments)))
                self._fragments, self._fragments_size, self._message_opcode = [], 0, 0
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._message_opcode:
                raise WireError("a new message inside a fragmented one")
            if fin:
                out.append((opcode, payload))
            else:
                self._message_opcode = opcode
                self._append(payload)
        else:
            raise WireError(f"reserved data opcode {opcode:#x}")

    def _append(self, payload: bytes) -> None:
        self._fragments_size += len(payload)
        if self._fragments_size > self._max:
            raise WireError(f"a fragmented message over the {self._max}-byte limit")
        self._fragments.append(payload)


def b64_frames(frames: Sequence[bytes]) -> list[bytes]:
    """The base64 of each audio frame (computed once, shared by every call)."""
    return [binascii.b2a_base64(f, newline=False) for f in frames]


def payload_size(b64: bytes) -> int:
    """The decoded size of a padded base64 text."""
    return len(b64) * 3 // 4 - (b64[-2:].count(b"=") if b64 else 0)


class CallMessages:
    """Twilio's messages for one stream, built from templates (see :mod:`twilio_side`)."""

    __slots__ = ("_media_head", "_media_mid", "_tails", "account_sid", "call_sid", "stream_sid")

    def __init__(
        self, stream_sid: str, account_sid: str, call_sid: str, payloads_b64: Sequence[bytes]
    ) -> None:
        if not (stream_sid.isascii() and stream_sid.isalnum()):
            raise ValueError(f"a stream SID of ASCII letters and digits, not {stream_sid!r}")
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self.call_sid = call_sid
        self._media_head = b'{"event":"media","sequenceNumber":"'
        self._media_mid = (
            b'","streamSid":"' + stream_sid.encode() + b'","media":{"track":"inbound","chunk":"'
        )
        self._tails = [b'","payload":"' + p + b'"}}' for p in payloads_b64]

    def media(self, sequence: int, chunk: int, timestamp: int, index: int) -> bytes:
        """The ``media`` message carrying audio frame ``index``, counters as Twilio writes them."""
        return b'%b%d%b%d","timestamp":"%d%b' % (
            self._media_head,
            sequence,
            self._media_mid,
            chunk,
            timestamp,
            self._tails[index],
        )

    def media_frame(self, sequence: int, chunk: int, timestamp: int, index: int) -> bytes:
        """:meth:`media` framed as :func:`client_frame` does (the hot path, inlined)."""
        body = b'%b%d%b%d","timestamp":"%d%b' % (
            self._media_head,
            sequence,
            self._media_mid,
            chunk,
            timestamp,
            self._tails[index],
        )
        n = len(body)
        if 126 <= n < 65536:
            return _HEAD16.pack(0x81, 0xFE, n) + body
        return client_frame(body)

    def echo_prefix(self, b64_length: int) -> bytes:
        """The server's frame of an echoed ``media`` message up to its payload, as the engine
        writes it (unmasked, :func:`engine.media.protocol.media_message`), for payloads of
        ``b64_length`` base64 characters: an echo is this, the payload, then ``"}}``."""
        head = _MEDIA_HEAD + self.stream_sid.encode() + _MEDIA_MID
        n = len(head) + b64_length + len(_MEDIA_END)
        if n < 126:
            return bytes((0x81, n)) + head
        if n < 65536:
            return bytes((0x81, 126)) + n.to_bytes(2, "big") + head
        return bytes((0x81, 127)) + n.to_bytes(8, "big") + head

    @staticmethod
    def connected() -> bytes:
        """Twilio's first message, ``connected``."""
        return twilio_side.connected_message().encode()

    def start(self, sequence: int, parameters: Mapping[str, str]) -> bytes:
        """The ``start`` message, with ``parameters`` as ``customParameters``."""
        return twilio_side.start_message(
            sequence, self.stream_sid, self.account_sid, self.call_sid, parameters
        ).encode()

    def mark(self, sequence: int, name: str) -> bytes:
        """The ``mark`` message echoing the server's mark ``name``."""
        return b'{"event":"mark","sequenceNumber":"%d","streamSid":"%b","mark":{"name":%b}}' % (
            sequence,
            self.stream_sid.encode(),
            _json_string(name).encode(),
        )

    def stop(self, sequence: int) -> bytes:
        """The ``stop`` message."""
        return twilio_side.stop_message(
            sequence, self.stream_sid, self.account_sid, self.call_sid
        ).encode()


MEDIA: Final = 1
"""An outbound ``media`` message; :func:`read_outbound` returns its base64 payload."""
MARK: Final = 2
"""An outbound ``mark``; :func:`read_outbound` returns its name (UTF-8)."""
CLEAR: Final = 3
"""An outbound ``clear``; :func:`read_outbound` returns ``b""``."""

_MEDIA_HEAD: Final = b'{"event":"media","streamSid":"'
_MEDIA_MID: Final = b'","media":{"payload":"'
_MEDIA_END: Final = b'"}}'
_MARK_HEAD: Final = b'{"event":"mark","streamSid":"'
_MARK_MID: Final = b'","mark":{"name":"'
_EVENTS: Final = {"media": MEDIA, "mark": MARK, "clear": CLEAR}


def read_outbound(message: bytes, stream_sid: bytes) -> tuple[int, bytes]:
    """``(kind, value)`` of one server message addressed to ``stream_sid`` (PROTOCOL.md §1.3).

    ``kind`` is :data:`MEDIA` (value: the payload's base64, as sent), :data:`MARK` (the name,
    UTF-8) or :data:`CLEAR` (``b""``). Raises :class:`WireError` on invalid JSON, a missing or
    mistyped field, another stream's SID, invalid base64 or an unknown event.
    """
    if message.startswith(_MEDIA_HEAD):
        sid_end = message.find(b'"', 30)
        if (
            message[30:sid_end] == stream_sid
            and message.startswith(_MEDIA_MID, sid_end)
            and message.endswith(_MEDIA_END)
        ):
            b64 = message[sid_end + 22 : -3]
            if b'"' not in b64 and b"\\" not in b64 and len(b64) % 4 == 0:
                return MEDIA, b64
    elif message.startswith(_MARK_HEAD):
        sid_end = message.find(b'"', 29)
        if (
            message[29:sid_end] == stream_sid
            and message.startswith(_MARK_MID, sid_end)
            and message.endswith(_MEDIA_END)
        ):
            name = message[sid_end + 18 : -3]
            if b'"' not in name and b"\\" not in name:
                return MARK, name
    return _read_json(message, stream_sid)


def _read_json(message: bytes, stream_sid: bytes) -> tuple[int, bytes]:
    try:
        msg = json.loads(message)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"invalid JSON from the server: {exc}") from None
    if type(msg) is not dict:
        raise WireError("a server message that is not a JSON object")
    kind = _EVENTS.get(msg.get("event"))  # type: ignore[arg-type]
    if kind is None:
        raise WireError(f"unknown outbound event {str(msg.get('event'))[:40]!r}")
    sid = msg.get("streamSid")
    if not isinstance(sid, str) or sid.encode() != stream_sid:
        raise WireError(f"a message for stream {str(sid)[:40]!r}, not this one")
    if kind == CLEAR:
        return CLEAR, b""
    body = msg.get("media" if kind == MEDIA else "mark")
    field = "payload" if kind == MEDIA else "name"
    value = body.get(field) if isinstance(body, dict) else None
    if not isinstance(value, str):
        raise WireError(f"{'media' if kind == MEDIA else 'mark'}.{field} missing or not a string")
    if kind == MARK:
        return MARK, value.encode("utf-8")
    try:
        raw = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise WireError("media.payload: invalid base64") from None
    return MEDIA, binascii.b2a_base64(raw, newline=False)
