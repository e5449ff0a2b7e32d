"""A lean WebSocket frame codec for the media socket's common case, sans-IO.

Nearly every frame on a media stream is a small, complete, masked text frame from the client
(one Media Streams message), and every frame the server sends is an unmasked text frame. Those
two cases are coded here in a few lines; everything else — the handshake, control frames,
fragmented or binary messages, 64-bit lengths, bad masking, invalid UTF-8 — stays with wsproto,
which sees exactly the bytes it would have seen without this module, starting at a frame
boundary.

:class:`FastFrameDecoder` splits the client's byte stream: :meth:`~FastFrameDecoder.feed`
returns, in order, decoded text messages (``str``) and raw frames for wsproto (``bytes``). A
complete control frame (ping, pong, close) is handed over on its own; the first frame it does
not take on itself (or any frame over ``max_payload`` bytes) switches it to pass-through for the
rest of the stream, so wsproto tracks fragmentation, limits and errors from there on.
:func:`text_frame` builds the server's unmasked text frame, byte for byte as wsproto would;
:func:`client_text_frame` a client's (masked with the all-zero key: load generators and the
capacity calibration speak as Twilio with it, at no masking cost).

No I/O, no trio: tested with tables against wsproto's own output.
"""

from __future__ import annotations

from typing import Final

__all__ = ["FastFrameDecoder", "client_text_frame", "text_frame"]

_FIN_TEXT: Final = 0x81  # FIN, no RSV bits, opcode 1 (text)
_MASKED: Final = 0x80
_CONTROL: Final = 0x08  # opcodes 8–15 are control frames
_MAX_CONTROL_PAYLOAD: Final = 125


def text_frame(text: str) -> bytes:
    """One unmasked, final text frame carrying ``text`` (the server → client form)."""
    data = text.encode("utf-8")
    n = len(data)
    if n < 126:
        return bytes((_FIN_TEXT, n)) + data
    if n < 65536:
        return bytes((_FIN_TEXT, 126, n >> 8, n & 0xFF)) + data
    return bytes((_FIN_TEXT, 127)) + n.to_bytes(8, "big") + data


def client_text_frame(text: str) -> bytes:
    """One final text frame carrying ``text`` as a client sends it: masked, with the all-zero
    masking key (RFC 6455 allows any key; XOR with zeros leaves the payload as it is)."""
    data = text.encode("utf-8")
    n = len(data)
    if n < 126:
        head = bytes((_FIN_TEXT, _MASKED | n))
    elif n < 65536:
        head = bytes((_FIN_TEXT, _MASKED | 126, n >> 8, n & 0xFF))
    else:
        head = bytes((_FIN_TEXT, _MASKED | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + data


def unmask(payload: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask`` (RFC 6455 §5.3)."""
    n = len(payload)
    if not n:
        return b""
    key = (bytes(mask) * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class FastFrameDecoder:
    """Splits a client's WebSocket byte stream into text messages and frames for wsproto.

    ``max_payload`` bounds the text frames decoded here (and so the bytes buffered waiting
    for one); a larger frame goes to wsproto, whose limits then apply.
    """

    __slots__ = ("_buffer", "_max", "_passthrough")

    def __init__(self, max_payload: int) -> None:
        self._buffer = b""
        self._max = max_payload
        self._passthrough = False

    @property
    def passthrough(self) -> bool:
        """Whether every byte now goes to wsproto (after a frame this decoder does not take)."""
        return self._passthrough

    def detach(self) -> bytes:
        """Switch to pass-through; returns what is buffered (from a frame boundary) for wsproto."""
        self._passthrough = True
        rest, self._buffer = self._buffer, b""
        return rest

    def feed(self, data: bytes) -> list[str | bytes]:
        """The messages and wsproto-bound frames completed by ``data``, in stream order."""
        if self._passthrough:
            return [data] if data else []
        buf = self._buffer + data if self._buffer else data
        end = len(buf)
        pos = 0
        out: list[str | bytes] = []
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if not b1 & _MASKED:
                break  # a client must mask: wsproto refuses it
            length = b1 & 0x7F
            if length < 126:
                start = pos + 6
            elif length == 126:
                if end - pos < 4:
                    self._buffer = buf[pos:]
                    return out
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                if length < 126:
                    break  # not the minimal encoding: wsproto refuses it
                start = pos + 8
            else:
                break  # 64-bit lengths are far over any limit here
            stop = start + length
            if b0 == _FIN_TEXT:
                if length > self._max:
                    break
                if stop > end:
                    self._buffer = buf[pos:]
                    return out
                try:
                    out.append(unmask(buf[start:stop], buf[start - 4 : start]).decode("utf-8"))
                except UnicodeDecodeError:
                    break  # wsproto closes with 1007
            elif b0 & 0xF8 == 0x80 | _CONTROL and length <= _MAX_CONTROL_PAYLOAD:
                if stop > end:
                    self._buffer = buf[pos:]
                    return out
                out.append(bytes(buf[pos:stop]))
            else:
                break  # fragmented, binary, continuation, RSV bits, reserved or odd control
            pos = stop
        else:
            self._buffer = buf[pos:]
            return out
        # A frame this decoder does not take: wsproto has the stream from here on.
        self._passthrough = True
        self._buffer = b""
        out.append(bytes(buf[pos:]))
        return out
