"""The switchboard: one server process's live calls, from the webhook's yes to the stream's end.

- **Admission** (:mod:`engine.admission`): the voice webhook asks :meth:`Switchboard.admit`
  before answering with a stream; a call admitted here holds its slot until its stream ends.
- **Authorization**: a media socket's handshake must be signed (:meth:`authorize_upgrade`), and
  its ``start`` must carry a stream token issued for its CallSid (current or rotated-out Auth
  Token); only then does the call count as streaming.
- **Stages**: the call's pipeline comes from its signed ``<Parameter>`` s — only pipelines this
  server serves, never a module named by a URL.
- **Registry**: the running :class:`~engine.media.session.CallSession` s, their counters folded
  into the metrics once a second, and the event loop's lag measured for admission.
- **End of turn**: the process's one Smart Turn model (:attr:`Switchboard.smart_turn`), loaded
  at start when the server ends turns with it, else when a call first asks for it.
- **Draining**: :meth:`drain` refuses new calls, lets calls in flight run on, winds down the
  rest with a spoken notice, then ends what is left.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import trio

from engine import metrics
from engine.admission import Admission, AdmissionConfig
from engine.capacity import CapacityEstimate, measure_frame_cost
from engine.control.signature import SIGNATURE_HEADER, WebhookAuth
from engine.control.token import StreamTokens
from engine.errors import CLOSE_GOING_AWAY, ConfigError, Overloaded, TokenError
from engine.loader import load_stage_factory
from engine.media.protocol import Start
from engine.media.session import CallSession, MediaSocket, SessionConfig
from engine.media.stage import Stage, StageFactory
from engine.media.turn.live import SharedSmartTurn
from engine.quiet import LogLimiter
from engine.transport.http1 import Request

__all__ = ["PIPELINE_PARAMETER", "Switchboard", "SwitchboardConfig"]

log = logging.getLogger(__name__)

PIPELINE_PARAMETER = "pipeline"
"""The stream ``<Parameter>`` that names a call's pipeline."""


@dataclass(frozen=True, slots=True)
class SwitchboardConfig:
    """What the switchboard needs from the server's configuration."""

    stage_factory: StageFactory
    pipelines: frozenset[str]
    session: SessionConfig
    admission: AdmissionConfig
    token_ttl: float


class Switchboard:
    """The live calls of one server process."""

    def __init__(
        self, config: SwitchboardConfig, auth: WebhookAuth, token_secrets: tuple[str, ...]
    ) -> None:
        self.config = config
        self.auth = auth
        self.tokens = StreamTokens(token_secrets[0], ttl=config.token_ttl)
        """Issues the stream tokens (keyed by the current Auth Token)."""
        self._previous_tokens = [StreamTokens(s, ttl=config.token_ttl) for s in token_secrets[1:]]
        self.admission = Admission(config.admission)
        self.sessions: set[CallSession] = set()
        self._meters: dict[CallSession, metrics.CallMeter] = {}
        self._factories: dict[str, StageFactory] = {}
        self._idle = trio.Event()
        self._idle.set()
        self._closing = False
        self._measured = trio.Event()
        self._refusals = LogLimiter()
        self.capacity: CapacityEstimate | None = None
        """The measured cost of a call and the ceiling it implies (``max_calls="auto"``)."""
        self.media_url = ""
        """The ``ws(s)://…/twilio/media`` URL Twilio dials (handshakes are signed for it)."""
        self.smart_turn = SharedSmartTurn(
            threads=config.session.turn_threads, max_wait_s=config.session.turn_timeout
        )
        """Smart Turn for the calls that use it; run ``smart_turn.run`` in the server's nursery
        (it loads when the first call asks for it)."""

    # -- the webhook's side -------------------------------------------------------------------

    def admit(self, call_sid: str) -> str | None:
        """Take on ``call_sid`` (its slot is held until its stream ends), or say why not."""
        refused = self.admission.admit(call_sid, trio.current_time())
        if refused is not None:
            metrics.CALLS_REFUSED.labels(refused).inc()
            count = self._refusals.note(refused, trio.current_time())
            if count:
                log.warning(
                    "call %s refused (%s); %d refused for this reason", call_sid, refused, count
                )
        else:
            metrics.CALLS_ADMITTED.inc()
        return refused

    def refuse_if_full(self) -> None:
        """Raise :class:`~engine.errors.Overloaded` if a new call would be refused now."""
        reason = self.admission.refusal(trio.current_time())
        if reason is not None:
            metrics.CALLS_REFUSED.labels(reason).inc()
            raise Overloaded(reason)

    # -- the media socket's side --------------------------------------------------------------

    def authorize_upgrade(self, request: Request) -> None:
        """Check a media handshake: signed for :attr:`media_url`, and the server not closing."""
        if self._closing:
            raise Overloaded("draining")
        query = request.query
        url = self.media_url + (f"?{query}" if query else "")
        self.auth.check(url, {}, request.headers.get(SIGNATURE_HEADER.lower()))

    async def run_call(self, socket: MediaSocket) -> None:
        """Run one accepted media socket as a call, to its end."""
        session = CallSession(
            socket,
            self._select_stage,
            authorize=lambda start: self._authorize(session, start),
            config=self.config.session,
            smart_turn=self.smart_turn.analyzer,
        )
        self.sessions.add(session)
        if len(self.sessions) == 1:
            self._idle = trio.Event()
        try:
            outcome = await session.run()
        finally:
            self.sessions.discard(session)
            meter = self._meters.pop(session, None)
            if meter is not None:
                meter.fold(session.counts())
                self.admission.stream_ended()
                metrics.CALLS_ACTIVE.dec()
            if not self.sessions:
                self._idle.set()
        metrics.CALLS_ENDED.labels(outcome.end.reason).inc()
        if outcome.end.reason in ("stage-error", "stage-stalled"):
            metrics.STAGE_ERRORS.labels(outcome.end.reason).inc()
        if outcome.sequence_anomalies:
            metrics.SEQUENCE_ANOMALIES.inc(outcome.sequence_anomalies)

    def _authorize(self, session: CallSession, start: Start) -> Mapping[str, str]:
        try:
            parameters = self.tokens.verify(start.custom_parameters, start.call_sid)
        except TokenError:
            for previous in self._previous_tokens:
                with contextlib.suppress(TokenError):
                    parameters = previous.verify(start.custom_parameters, start.call_sid)
                    break
            else:
                raise
        # From here the call counts as streaming, its reservation (if it was admitted here)
        # handed over in the same step, so the ceiling never counts it twice.
        self.admission.stream_started(start.call_sid)
        self._meters[session] = metrics.CallMeter()
        metrics.CALLS_ACTIVE.inc()
        return parameters

    def _select_stage(self, parameters: Mapping[str, str]) -> Stage:
        name = parameters.get(PIPELINE_PARAMETER)
        if not name:
            return self.config.stage_factory()
        if name not in self.config.pipelines:
            raise ConfigError(f"pipeline {name[:80]!r} is not served here")
        factory = self._factories.get(name)
        if factory is None:
            factory = self._factories[name] = load_stage_factory(name)
        return factory()

    # -- upkeep -------------------------------------------------------------------------------

    async def ready(self) -> None:
        """Wait until admission knows its ceiling (the start-up measurement, a fraction of a
        second, with ``max_calls="auto"``)."""
        await self._measured.wait()

    async def monitor(self) -> None:
        """Measure this process's capacity (with ``max_calls="auto"``) and event-loop lag, for
        admission and metrics; fold call counters into the metrics once a second. Runs until
        cancelled."""
        if self.config.admission.max_calls == "auto":
            measured = await measure_frame_cost()
            self.capacity = CapacityEstimate.calibrated(measured)
            self.admission.set_ceiling(self.capacity.ceiling)
            metrics.CALL_CEILING.set(self.capacity.ceiling)
            log.info(
                "capacity: %.0f µs of CPU per frame measured (%.0f in service), "
                "so at most %d calls at once",
                measured * 1e6,
                self.capacity.frame_cost * 1e6,
                self.capacity.ceiling,
            )
        self._measured.set()
        period, lag, tick = 0.1, 0.0, 0
        cpu, frames, calls_seen = time.process_time(), 0, 0
        while True:
            before = trio.current_time()
            await trio.sleep(period)
            # A spike stays visible for a few periods, then decays.
            lag = max(trio.current_time() - before - period, lag * 0.7)
            self.admission.note_loop_lag(lag)
            tick += 1
            if tick % 10 == 0:
                metrics.EVENT_LOOP_LAG.set(lag)
                for session, meter in self._meters.items():
                    meter.fold(session.counts())
                total = metrics.CallMeter.total_frames_in()
                now_cpu = time.process_time()
                stats = self.admission.statistics()
                seen = stats.admitted + stats.refused
                # Only a second in which no call was set up tells what frames cost: webhooks
                # and handshakes are not frames.
                if self.capacity is not None and seen == calls_seen:
                    self.capacity.update(now_cpu - cpu, total - frames)
                    self.admission.set_ceiling(self.capacity.ceiling)
                cpu, frames, calls_seen = now_cpu, total, seen
                ceiling = self.admission.ceiling
                if ceiling is not None:
                    metrics.CALL_CEILING.set(ceiling)

    async def drain(
        self,
        drain_timeout: float,
        notice: Callable[[], Awaitable[bytes | None]] | None,
        shutdown_timeout: float,
    ) -> None:
        """Refuse new calls; let calls in flight run on for ``drain_timeout`` seconds; wind the
        rest down (the ``notice`` made then, 8 kHz μ-law, played whole); then end what is
        left."""
        self.admission.drain()
        if self.sessions and drain_timeout > 0:
            log.info(
                "draining: refusing new calls, %d in flight may run on for %.0f s",
                len(self.sessions),
                drain_timeout,
            )
            with trio.move_on_after(drain_timeout):
                await self._idle.wait()
        if self.sessions and notice is not None:
            log.info("winding down %d call(s)", len(self.sessions))
            with trio.move_on_after(shutdown_timeout):
                audio = await notice()
                for session in list(self.sessions):
                    session.wind_down(audio)
                await self._idle.wait()
        self._closing = True
        if self.sessions:
            log.info("shutting down: ending %d call(s)", len(self.sessions))
        for session in list(self.sessions):
            session.end("shutdown", CLOSE_GOING_AWAY)
        with trio.move_on_after(shutdown_timeout):
            await self._idle.wait()
