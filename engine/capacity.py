"""How many calls this process can carry, measured on this machine.

A call costs the event loop a fixed amount of CPU per 20 ms frame — read, parse, decode, the
stage, encode, write — so the calls one process carries at a given share of its core follow
from that cost: ``ceiling = budget / (cost per frame × 50 frames/s)``. The cost is measured,
never assumed:

- at start-up, :func:`measure_frame_cost` runs the real media path — loopback TCP, the
  :class:`~engine.transport.websocket.MediaWebSocket`, a :class:`~engine.media.session.CallSession`
  with the echo stage — for a few thousand frames while a thread plays Twilio (its CPU is not
  counted: the measure is the event loop thread's own CPU time);
- while serving, :class:`CapacityEstimate` folds in what the process actually spends per frame
  of the calls it carries (whatever their pipeline), once enough frames flow to tell.

The ceiling is what admission control refuses beyond (``--max-calls auto``, the default).
"""

from __future__ import annotations

import base64
import logging
import math
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from engine.media.codec import FRAME_BYTES, SILENCE_BYTE
from engine.media.frames import Audio
from engine.media.protocol import MAX_MESSAGE_BYTES
from engine.media.session import CallSession, SessionConfig
from engine.media.stage import CallContext, Stage
from engine.transport.poller import Poller
from engine.transport.websocket import MediaWebSocket
from engine.transport.wsframe import client_text_frame

__all__ = ["FRAMES_PER_SECOND", "IN_SERVICE", "CapacityEstimate", "measure_frame_cost"]

_quiet = logging.getLogger("engine.capacity.calibration")
_quiet.setLevel(logging.WARNING)  # the calibration's calls end without a word

FRAMES_PER_SECOND = 50
"""Inbound media frames per second of a call (20 ms each)."""
DEFAULT_BUDGET = 1.0
"""Share of one core the calls may take, in units of the running cost estimate. Not a margin of
taste but measured: a frame costs less the more calls share the loop (reads and writes batch),
so the estimate — taken at the load of the moment, in seconds without call setup — overstates
what the next calls cost. On the bench (echo, the default server, one core): at budget 0.8 the
server refused calls from ~210 with p99 under 12 ms; at 1.0 the ceiling sat at 243–282 during a
sweep, 250 calls kept p99 8.5 ms with 0 lost, the process used 74 % of its core, and the raw
engine's p99 passes 20 ms only beyond ~300 calls."""
IN_SERVICE = 2.5
"""How much more a frame costs in service than in :func:`measure_frame_cost`'s closed loop on
the same machine: there eight calls' frames wait at every wake-up and nothing else happens; in
service frames arrive one or two per wake-up, calls are set up and torn down alongside, and the
process's other threads count. Measured as the bench's in-service cost (65–80 µs per frame,
echo at 200–250 calls) over the start-up reading (26–39 µs): 2.0–2.8. It matters until real
calls have refined the estimate — for a burst at start-up, above all."""
MIN_FRAMES_PER_UPDATE = 2000
"""Frames a period of service must carry before its cost per frame is folded in."""
SMOOTHING = 0.2
"""Weight of a new period's cost per frame in the running estimate."""


@dataclass(slots=True)
class CapacityEstimate:
    """The CPU cost of a call's frame, and the ceiling it implies (sans-IO: readings passed in)."""

    frame_cost: float
    """CPU seconds per inbound frame, its reply included."""
    budget: float = DEFAULT_BUDGET
    measured_frames: int = 0
    """Frames of real calls folded into :attr:`frame_cost` so far."""

    @classmethod
    def calibrated(cls, measured: float, budget: float = DEFAULT_BUDGET) -> CapacityEstimate:
        """The estimate before any call: :func:`measure_frame_cost`'s reading, times
        :data:`IN_SERVICE`."""
        return cls(measured * IN_SERVICE, budget)

    @property
    def ceiling(self) -> int:
        """Calls this process carries within its budget (at least 1)."""
        return max(1, math.floor(self.budget / (self.frame_cost * FRAMES_PER_SECOND)))

    def update(self, cpu_seconds: float, frames: int) -> None:
        """Fold in a period of service: ``cpu_seconds`` of process CPU for ``frames`` inbound
        frames. Periods with too few frames to tell are ignored."""
        if frames < MIN_FRAMES_PER_UPDATE or cpu_seconds <= 0:
            return
        observed = cpu_seconds / frames
        self.frame_cost += SMOOTHING * (observed - self.frame_cost)
        self.measured_frames += frames


class _Echo(Stage):
    receives_audio = True
    turn_detection = False
    barge_in = False
    paced = False
    inline_audio = True

    async def on_audio(self, call: CallContext, audio: Audio) -> None:
        await call.play_ulaw(audio.ulaw, label="echo")


def _accepted() -> WSConnection:
    """A server-side wsproto connection past its handshake (done in memory)."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="calibration", target="/twilio/media")))
    list(server.events())
    client.receive_data(server.send(AcceptConnection()))
    return server


def _twilio_side(index: int, frames: int) -> tuple[bytes, list[bytes], bytes]:
    """The opening, the media frames and the closing of one calibration stream, as frames."""
    sid = f"{index:032x}"
    head = client_text_frame(
        '{"event":"connected","protocol":"Call","version":"1.0.0"}'
    ) + client_text_frame(
        '{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC' + sid + '",'
        '"streamSid":"MZ' + sid + '","callSid":"CA' + sid + '","tracks":["inbound"],'
        '"customParameters":{},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,'
        '"channels":1}},"streamSid":"MZ' + sid + '"}'
    )
    payload = base64.b64encode(bytes([SILENCE_BYTE]) * FRAME_BYTES).decode()
    media = [
        client_text_frame(
            '{"event":"media","sequenceNumber":"' + str(k + 2) + '","media":{"track":"inbound",'
            '"chunk":"'
            + str(k + 1)
            + '","timestamp":"'
            + str(k * 20)
            + '","payload":"'
            + payload
            + '"},"streamSid":"MZ'
            + sid
            + '"}'
        )
        for k in range(frames)
    ]
    stop = client_text_frame(
        '{"event":"stop","sequenceNumber":"'
        + str(frames + 2)
        + '","stop":{"accountSid":"AC'
        + sid
        + '","callSid":"CA'
        + sid
        + '"},"streamSid":"MZ'
        + sid
        + '"}'
    )
    close = b"\x88\x82\0\0\0\0\x03\xe8"  # the client's close frame, 1000, zero mask
    return head, media, stop + close


def _play_twilio(peers: list[socket.socket], frames: int, ready: threading.Event) -> None:
    """Twilio's side, in a thread: each call sends its next frame once the previous one came
    back (one frame in flight per call, as in real time), then ``stop``."""
    try:
        _play(peers, frames, ready)
    except OSError:  # the measurement was cut short and the sockets closed under us
        pass
    finally:
        ready.set()


def _play(peers: list[socket.socket], frames: int, ready: threading.Event) -> None:
    scripts = [_twilio_side(i, frames) for i in range(len(peers))]
    echoed = [0] * len(peers)
    sent = [0] * len(peers)
    marker = b'"event":"media"'
    with selectors.DefaultSelector() as selector:
        for i, peer in enumerate(peers):
            peer.setblocking(True)
            peer.sendall(scripts[i][0] + scripts[i][1][0])
            sent[i] = 1
            selector.register(peer, selectors.EVENT_READ, i)
        ready.set()
        open_ = len(peers)
        while open_:
            for key, _ in selector.select(timeout=5):
                i = key.data
                data = peers[i].recv(65536)
                if not data:
                    selector.unregister(peers[i])
                    open_ -= 1
                    continue
                echoed[i] += data.count(marker)
                while sent[i] < frames and echoed[i] >= sent[i]:
                    peers[i].sendall(scripts[i][1][sent[i]])
                    sent[i] += 1
                if sent[i] == frames and echoed[i] >= frames:
                    peers[i].sendall(scripts[i][2])
                    sent[i] += 1  # stop sent


def _loopback_pairs(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """``count`` connected TCP pairs on the loopback interface (ours, Twilio's): TCP, as real
    streams come, since its system calls cost more than a socket pair's."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        pairs = []
        for _ in range(count):
            theirs = socket.create_connection(listener.getsockname())
            ours, _ = listener.accept()
            for sock in (ours, theirs):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pairs.append((ours, theirs))
    return pairs


async def measure_frame_cost(
    calls: int = 8,
    frames: int = 100,
    *,
    repeat: int = 3,
    clock: Callable[[], float] = time.thread_time,
) -> float:
    """CPU seconds the event loop spends per echoed frame on the real media path: the least of
    ``repeat`` runs, as :mod:`timeit` advises (noise — a start-up still settling, a neighbour
    — only ever adds; one run read anywhere from 33 to 49 µs on a quiet core)."""
    costs = [await _frame_cost(calls, frames, clock) for _ in range(max(1, repeat))]
    return min(costs)


async def _frame_cost(calls: int, frames: int, clock: Callable[[], float]) -> float:
    pairs = _loopback_pairs(calls)
    config = SessionConfig(probe_every=0, close_timeout=0.2)
    ready = threading.Event()
    twilio = threading.Thread(
        target=_play_twilio, args=([peer for _, peer in pairs], frames, ready), daemon=True
    )
    poller = Poller()
    try:
        sessions = [
            CallSession(
                MediaWebSocket(ours, _accepted(), MAX_MESSAGE_BYTES, poller),
                lambda _: _Echo(),
                authorize=lambda start: {},
                config=config,
                logger=_quiet,
            )
            for ours, _ in pairs
        ]
        twilio.start()
        await trio.to_thread.run_sync(ready.wait)
        started = clock()
        with trio.move_on_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(poller.run)
                async with trio.open_nursery() as streams:
                    for session in sessions:
                        streams.start_soon(session.run)
                nursery.cancel_scope.cancel()
        spent = clock() - started
        echoed = sum(s.outcome.media_frames for s in sessions if s.outcome is not None)
        await trio.to_thread.run_sync(twilio.join, 2)
    finally:
        for ours, peer in pairs:
            ours.close()
            peer.close()
    return spent / max(1, echoed)
