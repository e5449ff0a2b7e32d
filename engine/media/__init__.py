"""The per-call media path, following one 20 ms frame:

- :mod:`~engine.media.socket` — what a call needs of its WebSocket;
- :mod:`~engine.media.protocol` — Media Streams messages in, events out (sans-IO);
- :mod:`~engine.media.codec` — μ-law and resampling;
- :mod:`~engine.media.vad` — voice activity and the VAD's end of turn;
- :mod:`~engine.media.turn` — the end-of-turn analyzer (Smart Turn v3) and its policy;
- :mod:`~engine.media.frames`, :mod:`~engine.media.channels` — what flows between tasks;
- :mod:`~engine.media.stage` — the AI stage interface you implement;
- :mod:`~engine.media.playout` (sans-IO pacing, marks, barge-in) and
  :mod:`~engine.media.outbound` (its task, fast lane and ordered writer);
- :mod:`~engine.media.call` — what a call is tuned with and how it ended;
- :mod:`~engine.media.session` — one call's nursery, with the frame loop;
- :mod:`~engine.media.probe` — what is measured of a call, from outside its loop.
"""
