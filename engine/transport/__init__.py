"""The front door: one port for webhooks and media streams.

- :mod:`~engine.transport.frontdoor` — accepts connections, reads each first request, routes
  it, and holds the limits (idle and slow peers, connection cap, descriptor exhaustion);
- :mod:`~engine.transport.http1` — whole HTTP/1.1 requests out of a connection's bytes (sans-IO);
- :mod:`~engine.transport.http` — the HTTP application (Quart) on hypercorn, behind the door;
- :mod:`~engine.transport.websocket` — the media WebSocket, driven directly;
- :mod:`~engine.transport.wsframe` — its frame codec for the common case (sans-IO).
"""
