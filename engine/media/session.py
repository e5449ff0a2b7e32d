"""One call: a :class:`CallSession` runs the whole media pipeline of a stream in one nursery.

    socket ─▶ reader: parse → decode → route ─▶ stage ─▶ playout ─▶ socket
                      (inline: the stage's per-frame handler, the turn detector)
                                                   └╌╌▶ end-of-turn analyzer (own tasks)

The reader, the stage and playout are the nursery's tasks, joined by bounded
:class:`~engine.media.channels.FrameChannel` s; a watchdog keeps an eye on the stage and the
peer. Per-frame synchronous work (parsing, μ-law decode, VAD) runs inline in the reader; a
channel hop is paid only where a task may block (the stage) or must keep its own time
(playout, :mod:`engine.media.outbound`). What is measured of a call is measured from outside
the loop (:mod:`engine.media.probe`).

The turn detector is the end-of-turn policy — with ``turn_taking="smart-turn"`` (the default)
or a stage's own analyzer — or, with ``turn_taking="vad"``, the plain VAD. The policy
(:mod:`engine.media.turn.live`) gives the same events, but the turn ends when the analyzer
says so. Its questions run as tasks of the call's nursery and the
model in the process's worker threads (:class:`~engine.media.turn.live.SharedSmartTurn`);
the reader only feeds the policy and picks up answers that have arrived.

Whatever ends the call — Twilio's ``stop``, the peer closing, vanishing or going silent, a
protocol error, a failing or hung stage, a hang-up, or cancellation from outside (server
shutdown) — cancels the nursery, so no task outlives the call, and the socket is closed with a
code that says why (:class:`CallEnd`).

The module is one concern, a call's life from ``start`` to close, kept whole so that it reads in
the order a call lives it (its values — config, end, outcome — are in :mod:`engine.media.call`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from itertools import count

import trio

from engine.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    ConnectionClosed,
    EngineError,
    ProtocolError,
    UnknownEventError,
)
from engine.media.call import TURN_TAKING, Authorizer, CallEnd, CallOutcome, SessionConfig
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
    SpeechStarted,
)
from engine.media.outbound import OrderedWriter, Playout
from engine.media.playout import PlayoutCore
from engine.media.probe import CallProbe
from engine.media.protocol import Connected, Mark, Media, MediaStreamParser, Start, Stop
from engine.media.protocol import Dtmf as DtmfEvent
from engine.media.socket import MediaSocket
from engine.media.stage import CallContext, Stage
from engine.media.turn.analyzer import TurnAnalyzer, TurnTaker
from engine.media.turn.live import TurnStep, turn_step
from engine.media.vad import TurnEvent
from engine.metrics import CallCounts

__all__ = [
    "TURN_TAKING",
    "Authorizer",
    "CallEnd",
    "CallOutcome",
    "CallSession",
    "MediaSocket",
    "SessionConfig",
]

log = logging.getLogger(__name__)

_calls = count()  # which calls are probed (SessionConfig.probe_every)


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
        logger: logging.Logger = log,
        smart_turn: Callable[[], TurnAnalyzer] | None = None,
    ) -> None:
        """``logger`` takes what the call has to say (one line at INFO when it ends);
        ``smart_turn`` gives the process's shared Smart Turn analyzer to calls that use it
        (without it, such calls end turns by the VAD)."""
        self.config = config = config or SessionConfig()
        self._log = logger
        self._socket = socket
        self._select_stage = select_stage
        self._authorize = authorize
        self._smart_turn = smart_turn
        self._turn_taker: TurnTaker | None = None
        every = config.probe_every
        self._timed = every > 0 and next(_calls) % every == 0
        self._parser = MediaStreamParser()
        self._scope: trio.CancelScope | None = None
        self._end: CallEnd | None = None
        self._stage_inbox: FrameChannel[Frame] = FrameChannel(
            config.stage_inbox_size, lambda frame: type(frame) is Audio
        )
        self._playout_inbox: FrameChannel[Frame] = FrameChannel(config.playout_inbox_size)
        self._playout: Playout | None = None
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
            frames_out=playout.core.statistics().sent_ms // 20 if playout is not None else 0,
            frames_dropped=self._stage_inbox.statistics().dropped,
        )

    def end(
        self, reason: str, close_code: int | None = CLOSE_NORMAL, error: str | None = None
    ) -> None:
        """End the call (first reason wins); safe to call from any task or from outside."""
        if self._end is None:
            self._end = CallEnd(reason, close_code, error)
        if self._scope is not None:
            self._scope.cancel()

    def _fail(self, reason: str, exc: EngineError) -> None:
        self.end(reason, exc.close_code, str(exc))

    def wind_down(self, notice: bytes | None = None, reason: str = "shutdown") -> None:
        """End the call politely: stop the stage, cut its audio, play ``notice`` (8 kHz μ-law,
        e.g. "we have to end this call now") whole — the caller's speech does not cut it —
        then close normally once it has played.

        The call's outcome gives ``reason``. A call whose pipeline has not started yet simply
        ends. Calling :meth:`end` afterwards still ends the call at once.
        """
        if self._end is None:
            self._end = CallEnd(reason, CLOSE_NORMAL)
        if self._playout is None:
            self.end(reason, CLOSE_NORMAL)
            return
        self._notice = notice
        self._winding_down = True
        self._playout.barge_in = False
        self._stage_scope.cancel()

    async def run(self) -> CallOutcome:
        """Run the call to its end and return its outcome (also kept in :attr:`outcome`)."""
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                if self._end is not None:
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
                    except UnknownEventError as exc:
                        self._note_unknown(exc)
                        continue
                    if isinstance(event, Start):
                        self.start = event
                    elif not isinstance(event, Connected):
                        raise ProtocolError("expected start")  # the parser rejects this first
            return self._authorize(self.start)
        except trio.TooSlowError:
            self.end("start-timeout", CLOSE_POLICY_VIOLATION, "no start message in time")
        except ProtocolError as exc:
            self._fail("protocol-error", exc)
        except ConnectionClosed as exc:
            self._fail("peer-closed", exc)
        except EngineError as exc:  # TokenError, CallRejected, Overloaded: refused
            self._log.warning("call %s rejected: %s", self.call_sid, exc)
            self._fail("rejected", exc)
        return None

    async def _pipeline(self, parameters: Mapping[str, str]) -> None:
        start = self.start
        assert start is not None
        try:
            stage = self._select_stage(parameters)
            analyzer = self._turn_analyzer(stage)
        except Exception as exc:
            self._log.exception("could not make the stage of call %s", start.call_sid)
            self.end("stage-error", CLOSE_INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            return
        probe = CallProbe(timed=self._timed, round_trip=stage.inline_audio or stage.receives_audio)
        socket = self._socket
        if probe.timed or stage.turn_detection:
            socket = probe.socket(socket)
        core = PlayoutCore(
            start.stream_sid,
            replace(
                self.config.playout,
                barge_in=self.config.playout.barge_in and stage.barge_in,
                paced=self.config.playout.paced and stage.paced,
            ),
        )
        playout = self._playout = Playout(
            core,
            self._playout_inbox,
            OrderedWriter(self._guarded(socket)),
            self._stage_inbox,
            self._on_hang_up,
            pump=probe.step("encode", core.pump),
            ticked=True,  # the reader ticks it with every frame from the caller
        )
        call = CallContext(
            call_sid=start.call_sid,
            stream_sid=start.stream_sid,
            account_sid=start.account_sid,
            parameters=parameters,
            inbox=self._stage_inbox,
            playout=self._playout_inbox,
            play_now=playout.play_now,
            reserve=playout.room.reserve,
            note_transcript=self._note_transcript,
        )
        self._log.debug("call %s stream %s started", start.call_sid, start.stream_sid)
        async with trio.open_nursery() as nursery:
            turns = None
            if stage.turn_detection:
                turns, self._turn_taker = turn_step(
                    nursery,
                    analyzer,
                    self.config.turn,
                    self.config.end_of_turn,
                    timeout_s=self.config.turn_timeout,
                )
            nursery.start_soon(self._watchdog)
            nursery.start_soon(self._read, socket, stage, call, probe, turns)
            nursery.start_soon(self._run_stage, stage, call)
            nursery.start_soon(playout.run)

    def _turn_analyzer(self, stage: Stage) -> TurnAnalyzer | None:
        """The call's end-of-turn analyzer: the stage's own, the shared Smart Turn, or none."""
        own = stage.turn_analyzer()
        if own is not None or not stage.turn_detection:
            return own
        if (stage.turn_taking or self.config.turn_taking) == "vad":
            return None
        if self._smart_turn is None:
            self._log.warning("call %s: no Smart Turn in this process, so VAD", self.call_sid)
            return None
        return self._smart_turn()

    def _note_transcript(self, text: str | None) -> None:
        if self._turn_taker is not None:
            self._turn_taker.set_transcript(text)

    def _guarded(self, socket: MediaSocket) -> Callable[[list[str]], Awaitable[None]]:
        send_many = socket.send_many

        async def send(messages: list[str]) -> None:
            try:
                await send_many(messages)
            except ConnectionClosed as exc:
                self._fail("peer-closed", exc)
                await trio.lowlevel.checkpoint()

        return send

    def _on_hang_up(self, hang_up: HangUp) -> None:
        self.end("hang-up", CLOSE_NORMAL, hang_up.reason)

    async def _run_stage(self, stage: Stage, call: CallContext) -> None:
        try:
            with self._stage_scope:
                await stage.run(call)
        except Exception as exc:
            self._log.exception("stage of call %s failed", call.call_sid)
            self.end("stage-error", CLOSE_INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            return
        outbox = self._playout_inbox
        if self._winding_down:
            await outbox.send(Interrupt("wind-down"))
            if self._notice:
                await outbox.send(PlayAudio(self._notice, "wind-down"))
            await outbox.send(HangUp(self._end.reason if self._end else ""))
        else:
            await outbox.send(HangUp("stage-finished"))

    async def _watchdog(self) -> None:
        """End the call if the stage stops taking frames, or the peer stops sending."""
        config = self.config
        inbox, parser = self._stage_inbox, self._parser
        period = min(1.0, config.stage_stall_timeout / 4, config.silence_timeout / 4)
        taken, stage_since = -1, trio.current_time()
        heard, peer_since = -1, stage_since
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            stats = inbox.statistics()
            if stats.received != taken or not stats.current_buffer_used:
                taken, stage_since = stats.received, now
            elif now - stage_since >= config.stage_stall_timeout:
                self._log.warning(
                    "call %s: the stage took nothing for %.0f s", self.call_sid, now - stage_since
                )
                self.end("stage-stalled", CLOSE_INTERNAL_ERROR, "the stage stopped responding")
                return
            messages = parser.statistics().messages
            if messages != heard:
                heard, peer_since = messages, now
            elif now - peer_since >= config.silence_timeout:
                self._log.warning(
                    "call %s: nothing from Twilio for %.0f s", self.call_sid, now - peer_since
                )
                self.end("peer-silent", CLOSE_GOING_AWAY, "the stream went silent")
                return

    def _note_unknown(self, exc: UnknownEventError) -> None:
        if self._parser.statistics().unknown_events == 1:
            self._log.info(
                "call %s: ignoring %s (further ones are only counted)", self.call_sid, exc
            )

    async def _read(
        self,
        socket: MediaSocket,
        stage: Stage,
        call: CallContext,
        probe: CallProbe,
        turns: TurnStep | None,
    ) -> None:
        """The frame loop: parse → decode → route, until the stream stops."""
        receive, parse = socket.receive, self._parser.receive
        decode = probe.step("decode", ulaw_decode)
        inline = probe.async_step("stage", stage.on_audio) if stage.inline_audio else None
        wants_audio = stage.receives_audio and inline is None
        detect = probe.turns(probe.step("vad", turns)) if turns is not None else None
        to_stage = self._stage_inbox
        assert self._playout is not None
        tick, current_time = self._playout.tick, trio.current_time
        try:
            while True:
                try:
                    event = parse(await receive())
                except UnknownEventError as exc:
                    self._note_unknown(exc)
                    continue
                if type(event) is Media:
                    if event.track != "inbound":
                        continue
                    # Decoded here only for the turn detector; a stage decodes on first use.
                    pcm = decode(event.payload) if detect is not None else None
                    if inline is not None:
                        if not self._winding_down:
                            await inline(call, Audio(event.payload, pcm, event.timestamp))
                    elif wants_audio:
                        to_stage.send_nowait(Audio(event.payload, pcm, event.timestamp))
                    if detect is not None:
                        assert pcm is not None
                        for turn in detect(pcm, event.timestamp):
                            await self._route_turn(turn)
                    await tick(current_time())  # the caller's frames are the call's clock
                elif type(event) is Mark:
                    await self._route_mark(event.name)
                elif type(event) is DtmfEvent:
                    await to_stage.send(Dtmf(event.digit))
                elif type(event) is Stop:
                    self.end("stop", CLOSE_NORMAL)
                    return
        except ProtocolError as exc:  # including a message too big for the socket
            self._log.warning("call %s: protocol error: %s", self.call_sid, exc)
            self._fail("protocol-error", exc)
        except ConnectionClosed as exc:
            self._fail("peer-closed", exc)
        except Exception as exc:  # raised by the stage's inline handler
            self._log.exception("stage of call %s failed", self.call_sid)
            self.end("stage-error", CLOSE_INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    async def _route_turn(self, turn: TurnEvent) -> None:
        if type(turn) is SpeechStarted:
            await self._playout_inbox.send(turn)  # barge-in
        await self._stage_inbox.send(turn)

    async def _route_mark(self, name: str) -> None:
        assert self._playout is not None
        done = self._playout.mark_now(name)
        if done is False:
            await self._playout_inbox.send(MarkEcho(name))
        elif done is not None:
            await self._stage_inbox.send(done)

    async def _close(self) -> None:
        end = self._end or CallEnd("shutdown", CLOSE_GOING_AWAY)
        self._end = end
        self._stage_inbox.close()
        self._playout_inbox.close()
        if end.close_code is not None:
            with trio.move_on_after(self.config.close_timeout) as scope:
                scope.shield = True
                await self._socket.close(end.close_code, (end.error or end.reason)[:120])
        stats = self._parser.statistics()
        self.outcome = CallOutcome(
            call_sid=self.call_sid,
            stream_sid=self.start.stream_sid if self.start else None,
            end=end,
            media_frames=stats.media,
            dropped_frames=self._stage_inbox.statistics().dropped,
            sequence_anomalies=stats.sequence_anomalies,
            unknown_events=stats.unknown_events,
            playout=self._playout.core.statistics() if self._playout else None,
            turns=self._turn_taker.statistics() if self._turn_taker else None,
        )
        if stats.sequence_anomalies or stats.unknown_events:
            self._log.info(
                "call %s: %d sequence numbers skipped, %d repeated, %d out of order; "
                "%d unknown events",
                self.call_sid,
                stats.gaps,
                stats.duplicates,
                stats.out_of_order,
                stats.unknown_events,
            )
        self._log.info(
            "call %s ended: %s%s (close %s)",
            self.call_sid,
            end.reason,
            f", {end.error}" if end.error else "",
            end.close_code,
        )
