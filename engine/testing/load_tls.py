"""TLS for the load generator's sockets, sans-IO: :class:`ssl.SSLObject` over memory buffers.

The load generator reads and writes its non-blocking sockets itself (one epoll loop, kernel
receive timestamps), so TLS cannot take the socket over as :meth:`ssl.SSLContext.wrap_socket`
would. :class:`TlsSession` keeps the TLS state machine between two :class:`ssl.MemoryBIO`\\ s
instead: the socket's raw bytes go in, plaintext comes out, and what TLS has to send (handshake
records, encrypted data, alerts) is returned as bytes for the caller to write. An ``https://``
webhook and a ``wss://`` stream are then the plain protocol inside this, unchanged.
"""

from __future__ import annotations

import ssl

from engine.testing.load_wire import WireError

__all__ = ["TlsSession", "client_context"]

_READ_BYTES = 65536


def client_context(ca_file: str | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """A client context: the system's trusted CAs (plus ``ca_file``, e.g. a test CA), the
    server's certificate and host name checked unless ``verify`` is false."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class TlsSession:
    """One client TLS connection, sans-IO (see the module docstring).

    Every method returns the raw bytes TLS wants written to the socket (possibly ``b""``);
    every failure is a :class:`~engine.testing.load_wire.WireError`.
    """

    __slots__ = ("_incoming", "_object", "_outgoing", "established")

    def __init__(self, context: ssl.SSLContext, hostname: str) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(self._incoming, self._outgoing, server_hostname=hostname)
        self.established = False
        """Whether the handshake has completed."""

    def handshake(self, raw: bytes | None = None) -> bytes:
        """Advance the handshake with ``raw`` bytes from the server (``None`` to begin;
        ``b""``: the server closed). Check :attr:`established` afterwards."""
        if raw == b"":
            raise WireError("the server closed the connection during the TLS handshake")
        if raw:
            self._incoming.write(raw)
        try:
            self._object.do_handshake()
            self.established = True
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise WireError(f"TLS handshake failed: {exc}") from None
        return self._outgoing.read()

    def encrypt(self, plaintext: bytes) -> bytes:
        """``plaintext`` as the records to write."""
        try:
            self._object.write(plaintext)
        except ssl.SSLError as exc:
            raise WireError(f"TLS: {exc}") from None
        return self._outgoing.read()

    def decrypt(self, raw: bytes) -> tuple[bytes, bytes, bool]:
        """Take ``raw`` bytes from the server (``b""``: it closed the connection).

        Returns ``(plaintext, to_write, closed)``: the application data they completed (often
        ``b""`` while a record is still partial), bytes TLS wants written, and whether the
        connection has ended (a close_notify, or the server's end of the stream).
        """
        if raw:
            self._incoming.write(raw)
        else:
            self._incoming.write_eof()
        parts: list[bytes] = []
        closed = False
        while True:
            try:
                chunk = self._object.read(_READ_BYTES)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                closed = True
                break
            except ssl.SSLError as exc:
                raise WireError(f"TLS: {exc}") from None
            if not chunk:
                closed = True
                break
            parts.append(chunk)
        return b"".join(parts), self._outgoing.read(), closed or not raw
