"""One call: a :class:`CallSession` runs the whole media pipeline of a stream in one nursery.

    socket ─▶ reader (parse → decode → VAD/turn, inline) ─▶ stage ─▶ playout ─▶ socket

The reader, the stage and playout are the nursery's three tasks, joined by bounded
:class:`~engine.media.channels.FrameChannel` s. Per-frame synchronous work (parsing, μ-law
decode, VAD) runs inline in the reader; a channel hop is paid only where a task may block
(the stage) or must keep its own time (playout). Playout is the socket's only writer.

Whatever ends the call — Twilio's ``stop``, the peer closing or vanishing, a protocol error, a
failing stage, a hang-up, or cancellation from outside (server shutdown) — cancels the nursery,
so no task outlives the call, and the socket is closed with a code that says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from time import perf_counter
from typing import Protocol

import trio

from engine.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CallRejected,
    ConnectionClosed,
    ProtocolError,
    TokenError,
    UnknownEventError,
)
from engine.media.channels import FrameChannel
from engine.media.codec import ulaw_decode
from engine.media.frames import (
    Audio,
    Dtmf,
    Frame,
    HangUp,
    Interrupt,
    MarkEcho,
    PlayAudio,
    SpeechEnded,
    SpeechStarted,
)
from engine.media.playout import (
    PlayoutConfig,
    PlayoutCore,
    PlayoutStatistics,
    PlayoutWriter,
    run_playout,
)
from engine.media.protocol import Connected, Mark, Media, MediaStreamParser, Start, Stop
from engine.media.protocol import Dtmf as DtmfEvent
from engine.media.stage import CallContext, Stage
from engine.media.vad import TurnConfig, TurnDetector
from engine.metrics import FRAME_STEP, CallCounts

__all__ = ["Authorizer", "CallOutcome", "CallSession", "MediaSocket", "SessionConfig"]

log = logging.getLogger(__name__)

SAMPLE_EVERY = 64
"""One inbound message in this many per call has its steps timed (``FRAME_STEP``)."""
_DECODE = FRAME_STEP.labels("decode")
_VAD = FRAME_STEP.labels("vad")
_STAGE = FRAME_STEP.labels("stage")


class MediaSocket(Protocol):
    """The WebSocket a session talks over (already accepted).

    ``receive`` and ``send`` raise :class:`~engine.errors.ConnectionClosed` once the peer is gone.
    """

    async def receive(self) -> str | bytes:
        """The next message."""
        ...

    async def send(self, message: str) -> None:
        """Send one text message."""
        ...

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the socket (idempotent; never raises for a peer that is already gone)."""
        ...


Authorizer = Callable[[Start], Mapping[str, str]]
"""Checks a stream's ``start`` (its token); returns the verified custom parameters or raises
:class:`~engine.errors.TokenError` / :class:`~engine.errors.CallRejected`."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Tuning of a call session."""

    turn: TurnConfig = field(default_factory=TurnConfig)
    playout: PlayoutConfig = field(default_factory=PlayoutConfig)
    start_timeout: float = 10.0
    """Seconds allowed for ``connected`` + ``start`` before the socket is closed."""
    close_timeout: float = 1.0
    """Seconds allowed for the closing handshake."""
    stage_inbox_size: int = 50
    """Frames queued for the stage (1 s of audio); live audio beyond it drops oldest."""
    stage_stall_timeout: float = 10.0
    """A stage that takes nothing from a non-empty inbox for this long is hung: the call ends
    (close 1011) rather than sitting there forever."""
    playout_inbox_size: int = 64


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """How a call ended and what it carried."""

    call_sid: str | None
    stream_sid: str | None
    reason: str
    """``stop``, ``hang-up``, ``peer-closed``, ``protocol-error``, ``stage-error``,
    ``stage-stalled``, ``stage-finished``, ``rejected``, ``start-timeout`` or ``shutdown``."""
    close_code: int | None
    error: str | None
    media_frames: int
    dropped_frames: int
    sequence_gaps: int
    playout: PlayoutStatistics | None


class CallSession:
    """Runs one Media Streams call on an accepted socket.

    ``select_stage`` makes the call's stage from the verified stream parameters (so a call's
    pipeline can travel in its signed ``<Parameter>`` s); a plain factory fits with ``lambda _: …``.
    """

    def __init__(
        self,
        socket: MediaSocket,
        select_stage: Callable[[Mapping[str, str]], Stage],
        *,
        authorize: Authorizer,
        config: SessionConfig | None = None,
    ) -> None:
        self._socket = socket
        self._batched = hasattr(socket, "send_many")  # e.g. the dedicated listener's sockets
        self._select_stage = select_stage
        self._authorize = authorize
        self.config = config or SessionConfig()
        self._parser = MediaStreamParser()
        self._scope: trio.CancelScope | None = None
        self._end_reason: tuple[str, int | None, str | None] | None = None
        self._stage_inbox: FrameChannel[Frame] = FrameChannel(
            self.config.stage_inbox_size, lambda frame: type(frame) is Audio
        )
        self._playout_inbox: FrameChannel[Frame] = FrameChannel(self.config.playout_inbox_size)
        self._playout: PlayoutCore | None = None
        self._stage_scope = trio.CancelScope()
        self._notice: bytes | None = None
        self._winding_down = False
        self.start: Start | None = None
        """The stream's ``start`` once received."""
        self.outcome: CallOutcome | None = None
        """How the call ended, once it has."""

    @property
    def call_sid(self) -> str | None:
        """The CallSid, once ``start`` has arrived."""
        return self.start.call_sid if self.start else None

    def counts(self) -> CallCounts:
        """The call's running frame counters (cheap: read them as often as you like)."""
        playout = self._playout
        return CallCounts(
            frames_in=self._parser.statistics().media,
            frames_out=playout.statistics().sent_ms // 20 if playout is not None else 0,
            frames_dropped=self._stage_inbox.statistics().dropped,
        )

    def end(
        self, reason: str, close_code: int | None = CLOSE_NORMAL, error: str | None = None
    ) -> None:
        """End the call (first reason wins); safe to call from any task or from outside."""
        if self._end_reason is None:
            self._end_reason = (reason, close_code, error)
        if self._scope is not None:
            self._scope.cancel()

    def wind_down(self, notice: bytes | None = None, reason: str = "shutdown") -> None:
        """End the call politely: stop the stage, cut its audio, play ``notice`` (8 kHz μ-law,
        e.g. "we have to end this call now"), then close normally once it has played.

        The call's outcome gives ``reason``. A call whose pipeline has not started yet simply
        ends. Calling :meth:`end` afterwards still ends the call at once.
        """
        if self._end_reason is None:
            self._end_reason = (reason, CLOSE_NORMAL, None)
        if self._playout is None:
            self.end(reason, CLOSE_NORMAL)
            return
        self._notice = notice
        self._winding_down = True
        self._stage_scope.cancel()

    async def run(self) -> CallOutcome:
        """Run the call to its end and return its outcome (also kept in :attr:`outcome`)."""
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                if self._end_reason is not None:
                    scope.cancel()
                parameters = await self._open()
                if parameters is not None:
                    await self._pipeline(parameters)
        finally:
            await self._close()
        assert self.outcome is not None
        return self.outcome

    async def _open(self) -> Mapping[str, str] | None:
        try:
            with trio.fail_after(self.config.start_timeout):
                while self.start is None:
                    try:
                        event = self._parser.receive(await self._socket.receive())
                    except UnknownEventError:
                        continue
                    if isinstance(event, Start):
                        self.start = event
                    elif not isinstance(event, Connected):
                        raise ProtocolError("expected start")  # the parser rejects this first
            return self._authorize(self.start)
        except trio.TooSlowError:
            self.end("start-timeout", CLOSE_POLICY_VIOLATION, "no start message in time")
        except (TokenError, CallRejected) as exc:
            log.warning("call %s rejected: %s", self.call_sid, exc)
            self.end("rejected", exc.close_code, str(exc))
        except ProtocolError as exc:
            self.end("protocol-error", exc.close_code, str(exc))
        except ConnectionClosed as exc:
            self.end("peer-closed", None, str(exc))
        return None

    async def _pipeline(self, parameters: Mapping[str, str]) -> None:
        start = self.start
        assert start is not None
        try:
            stage = self._select_stage(parameters)
        except Exception as exc:
            log.exception("could not make the stage of call %s", start.call_sid)
            self.end("stage-error", CLOSE_INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            return
        playout_config = replace(
            self.config.playout,
            barge_in=self.config.playout.barge_in and stage.barge_in,
            paced=self.config.playout.paced and stage.paced,
        )
        self._playout = PlayoutCore(start.stream_sid, playout_config)
        writer = PlayoutWriter(self._playout, self._playout_inbox, self._send_many)
        call = CallContext(
            call_sid=start.call_sid,
            stream_sid=start.stream_sid,
            account_sid=start.account_sid,
            parameters=parameters,
            inbox=self._stage_inbox,
            playout=self._playout_inbox,
            play_now=writer.play_now,
            reserve=writer.reserve,
        )
        log.info("call %s stream %s started", start.call_sid, start.stream_sid)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_stage)
            nursery.start_soon(self._read, stage, call, writer)
            nursery.start_soon(self._run_stage, stage, call)
            nursery.start_soon(
                run_playout,
                self._playout,
                self._playout_inbox,
                self._send,
                self._stage_inbox,
                self._on_hang_up,
                writer,
            )

    async def _send(self, message: str) -> None:
        try:
            await self._socket.send(message)
        except ConnectionClosed as exc:
            self.end("peer-closed", None, str(exc))
            await trio.lowlevel.checkpoint()

    async def _send_many(self, messages: list[str]) -> None:
        socket = self._socket
        try:
            if self._batched:
                await socket.send_many(messages)  # type: ignore[attr-defined]
            else:
                for message in messages:
                    await socket.send(message)
        except ConnectionClosed as exc:
            self.end("peer-closed", None, str(exc))
            await trio.lowlevel.checkpoint()

    def _on_hang_up(self, hang_up: HangUp) -> None:
        self.end("hang-up", CLOSE_NORMAL, hang_up.reason)

    async def _run_stage(self, stage: Stage, call: CallContext) -> None:
        try:
            with self._stage_scope:
                await stage.run(call)
        except Exception as exc:
            log.exception("stage of call %s failed", call.call_sid)
            self.end("stage-error", CLOSE_INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            return
        if self._winding_down:
            await self._playout_inbox.send(Interrupt("wind-down"))
            if self._notice:
                await self._playout_inbox.send(PlayAudio(self._notice, "wind-down"))
            await self._playout_inbox.send(HangUp(self._end_reason[0] if self._end_reason else ""))
        else:
            await self._playout_inbox.send(HangUp("stage-finished"))

    async def _watch_stage(self) -> None:
        timeout = self.config.stage_stall_timeout
        inbox = self._stage_inbox
        taken, since = -1, trio.current_time()
        while True:
            await trio.sleep(min(1.0, timeout / 4))
            stats = inbox.statistics()
            now = trio.current_time()
            if stats.received != taken or not stats.current_buffer_used:
                taken, since = stats.received, now
            elif now - since >= timeout:
                log.warning("call %s: the stage took nothing for %.0f s", self.call_sid, timeout)
                self.end("stage-stalled", CLOSE_INTERNAL_ERROR, "the stage stopped responding")
                return

    async def _read(self, stage: Stage, call: CallContext, writer: PlayoutWriter) -> None:
        parser = self._parser
        receive = self._socket.receive
        detector = TurnDetector(self.config.turn) if stage.turn_detection else None
        to_stage = self._stage_inbox
        to_playout = self._playout_inbox
        inline = stage.on_audio if stage.inline_audio else None
        wants_audio = stage.receives_audio and inline is None
        # Step timings for the metrics, on one inbound message in SAMPLE_EVERY.
        tick = 0
        t0 = t1 = 0.0
        try:
            while True:
                message = await receive()
                tick += 1
                sample = not tick % SAMPLE_EVERY
                if sample:
                    t0 = perf_counter()
                try:
                    event = parser.receive(message)
                except UnknownEventError as exc:
                    log.info("call %s: ignoring %s", self.call_sid, exc)
                    continue
                if type(event) is Media:
                    if event.track != "inbound":
                        continue
                    pcm = ulaw_decode(event.payload)
                    if sample:
                        t1 = perf_counter()
                        _DECODE.observe(t1 - t0)
                        if (inline is not None or wants_audio) and not writer.sampled_at:
                            writer.sampled_at = t0
                    if inline is not None and not self._winding_down:
                        try:
                            await inline(call, Audio(event.payload, pcm, event.timestamp))
                        except Exception as exc:
                            log.exception("stage of call %s failed", self.call_sid)
                            self.end(
                                "stage-error", CLOSE_INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
                            )
                            return
                        if sample:
                            _STAGE.observe(max(0.0, perf_counter() - t1 - writer.reply_s))
                            writer.reply_s = 0.0
                    elif wants_audio:
                        to_stage.send_nowait(Audio(event.payload, pcm, event.timestamp))
                    if detector is not None:
                        if sample:
                            t1 = perf_counter()
                        turn_events = detector.process(pcm, event.timestamp)
                        if sample:
                            _VAD.observe(perf_counter() - t1)
                        for turn_event in turn_events:
                            if type(turn_event) is SpeechStarted:
                                writer.turn_ended_at = 0.0
                                await to_playout.send(turn_event)
                            elif type(turn_event) is SpeechEnded:
                                writer.turn_ended_at = perf_counter()
                            await to_stage.send(turn_event)
                elif type(event) is Mark:
                    done = writer.mark_now(event.name)
                    if done is False:
                        await to_playout.send(MarkEcho(event.name))
                    elif done is not None:
                        await to_stage.send(done)
                elif type(event) is DtmfEvent:
                    await to_stage.send(Dtmf(event.digit))
                elif type(event) is Stop:
                    self.end("stop", CLOSE_NORMAL)
                    return
        except ProtocolError as exc:
            log.warning("call %s: protocol error: %s", self.call_sid, exc)
            self.end("protocol-error", exc.close_code, str(exc))
        except ConnectionClosed as exc:
            self.end("peer-closed", None, str(exc))

    async def _close(self) -> None:
        if self._end_reason is None:
            self._end_reason = ("shutdown", CLOSE_GOING_AWAY, None)
        reason, code, error = self._end_reason
        self._stage_inbox.close()
        self._playout_inbox.close()
        if code is not None:
            with trio.move_on_after(self.config.close_timeout) as scope:
                scope.shield = True
                await self._socket.close(code, (error or reason)[:120])
        stats = self._parser.statistics()
        self.outcome = CallOutcome(
            call_sid=self.call_sid,
            stream_sid=self.start.stream_sid if self.start else None,
            reason=reason,
            close_code=code,
            error=error,
            media_frames=stats.media,
            dropped_frames=self._stage_inbox.statistics().dropped,
            sequence_gaps=stats.gaps,
            playout=self._playout.statistics() if self._playout else None,
        )
        log.info("call %s ended: %s%s", self.call_sid, reason, f" ({error})" if error else "")
