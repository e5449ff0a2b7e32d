"""Benchmarks of the media stream: frame round trip, capacity, bursts, turn latency, barge-in.

The server runs in its own process pinned to one CPU; the load generator (the lean emulated
Twilio of :mod:`engine.testing.load`) runs in another, pinned to another CPU, and reports its
own CPU use and send lateness so a result can be trusted. ``voice-engine bench`` drives it all,
against the engine's default server or any Media Streams server (``--target``,
:mod:`bench.targets`), and compares results side by side (:mod:`bench.compare`).
"""
