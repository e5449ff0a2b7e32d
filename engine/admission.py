"""Admission control: refuse the call this process cannot carry, rather than degrade every call.

Pure bookkeeping with time passed in. A call counts against the ceiling from the moment its voice
webhook is admitted (a *reservation*: Twilio has not opened the media stream yet) until its stream
ends; a stream counts from the moment its token proves which call it is. Reservations whose stream
never arrives here — it may land on another worker, or the caller hung up while it rang — lapse
after ``reservation_ttl`` seconds.

The ceiling is per process: with ``--workers N`` the server as a whole carries up to N times it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from engine.errors import ConfigError

__all__ = ["Admission", "AdmissionConfig", "AdmissionStatistics"]

DRAINING = "draining"
CALL_CEILING = "call-ceiling"
LOOP_LAG = "loop-lag"


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """The ceilings; ``None`` means no limit."""

    max_calls: int | Literal["auto"] | None = "auto"
    """Concurrent calls (streaming or about to) this process takes on; ``"auto"``: as many as
    its measured CPU cost per call allows (:mod:`engine.capacity`), set with
    :meth:`Admission.set_ceiling`."""
    max_loop_lag: float | None = None
    """Seconds of event-loop lag beyond which new calls are refused until it recovers."""
    reservation_ttl: float = 15.0
    """Seconds an admitted call's slot is held while its media stream has not yet arrived."""

    def __post_init__(self) -> None:
        if isinstance(self.max_calls, str) and self.max_calls != "auto":
            raise ConfigError(f"max_calls must be a number, 'auto' or None, not {self.max_calls!r}")
        if isinstance(self.max_calls, int) and self.max_calls < 0:
            raise ConfigError(f"max_calls must be ≥ 0, not {self.max_calls}")
        if self.max_loop_lag is not None and self.max_loop_lag <= 0:
            raise ConfigError(f"max_loop_lag must be > 0 seconds, not {self.max_loop_lag}")
        if self.reservation_ttl <= 0:
            raise ConfigError("reservation_ttl must be > 0 seconds")


@dataclass(frozen=True, slots=True)
class AdmissionStatistics:
    """A snapshot of the admission state."""

    ceiling: int | None
    streaming: int
    reserved: int
    admitted: int
    refused: int
    loop_lag: float
    draining: bool


class Admission:
    """Decides, call by call, whether this process takes it on."""

    def __init__(self, config: AdmissionConfig | None = None) -> None:
        self.config = config = config or AdmissionConfig()
        self.ceiling: int | None = config.max_calls if isinstance(config.max_calls, int) else None
        """The call ceiling in force (``None``: none, or not measured yet)."""
        self._reserved: OrderedDict[str, float] = OrderedDict()  # CallSid → expiry
        self._streaming = 0
        self._admitted = 0
        self._refused = 0
        self._loop_lag = 0.0
        self._draining = False

    def refusal(self, now: float) -> str | None:
        """Why a new call would be refused now (``draining``, ``call-ceiling``, ``loop-lag``),
        or ``None`` if it would be taken."""
        if self._draining:
            return DRAINING
        limit = self.ceiling
        if limit is not None:
            self._expire(now)
            if self._streaming + len(self._reserved) >= limit:
                return CALL_CEILING
        lag_limit = self.config.max_loop_lag
        if lag_limit is not None and self._loop_lag > lag_limit:
            return LOOP_LAG
        return None

    def admit(self, call_sid: str, now: float) -> str | None:
        """Take on ``call_sid`` (reserving its slot) and return ``None``, or return why not."""
        reason = self.refusal(now)
        if reason is not None:
            self._refused += 1
            return reason
        self._admitted += 1
        self._reserved[call_sid] = now + self.config.reservation_ttl
        self._reserved.move_to_end(call_sid)
        return None

    def stream_started(self, call_sid: str) -> None:
        """The stream of ``call_sid`` proved who it is: it counts until :meth:`stream_ended`,
        and its reservation (if it was admitted here) is handed over in the same step, so the
        call is never counted twice, nor not at all."""
        self._reserved.pop(call_sid, None)
        self._streaming += 1

    def stream_ended(self) -> None:
        """A media stream that :meth:`stream_started` counted has ended."""
        self._streaming = max(0, self._streaming - 1)

    def set_ceiling(self, calls: int) -> None:
        """Set the measured ceiling of ``max_calls="auto"`` (a fixed ceiling stays fixed)."""
        if self.config.max_calls == "auto":
            self.ceiling = calls

    def note_loop_lag(self, seconds: float) -> None:
        """Record the event loop's latest measured lag."""
        self._loop_lag = max(0.0, seconds)

    def drain(self) -> None:
        """Refuse every new call from now on (shutdown has begun)."""
        self._draining = True

    def statistics(self) -> AdmissionStatistics:
        """A snapshot of the counters."""
        return AdmissionStatistics(
            ceiling=self.ceiling,
            streaming=self._streaming,
            reserved=len(self._reserved),
            admitted=self._admitted,
            refused=self._refused,
            loop_lag=self._loop_lag,
            draining=self._draining,
        )

    def _expire(self, now: float) -> None:
        reserved = self._reserved
        while reserved:
            call_sid, expiry = next(iter(reserved.items()))
            if expiry > now:
                break
            del reserved[call_sid]
