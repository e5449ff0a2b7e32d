"""Admission control: refuse the call this process cannot carry, rather than degrade every call.

Pure bookkeeping with time passed in. A call counts against the ceiling from the moment its voice
webhook is admitted (a *reservation*: Twilio has not opened the media stream yet) until its
stream ends. Reservations whose stream never arrives here — it may land on another worker, or
the caller hung up while it rang — lapse after ``reservation_ttl`` seconds.

The ceiling is per process: with ``--workers N`` the server as a whole carries up to N times it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from engine.errors import ConfigError

__all__ = ["Admission", "AdmissionConfig", "AdmissionStatistics"]

DRAINING = "draining"
CALL_CEILING = "call-ceiling"
LOOP_LAG = "loop-lag"


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """The ceilings; ``None`` means no limit."""

    max_calls: int | None = None
    """Concurrent calls (streaming or about to) this process takes on."""
    max_loop_lag: float | None = None
    """Seconds of event-loop lag beyond which new calls are refused until it recovers."""
    reservation_ttl: float = 15.0
    """Seconds an admitted call's slot is held while its media stream has not yet arrived."""

    def __post_init__(self) -> None:
        if self.max_calls is not None and self.max_calls < 0:
            raise ConfigError(f"max_calls must be ≥ 0, not {self.max_calls}")
        if self.max_loop_lag is not None and self.max_loop_lag <= 0:
            raise ConfigError(f"max_loop_lag must be > 0 seconds, not {self.max_loop_lag}")
        if self.reservation_ttl <= 0:
            raise ConfigError("reservation_ttl must be > 0 seconds")


@dataclass(frozen=True, slots=True)
class AdmissionStatistics:
    """A snapshot of the admission state."""

    streaming: int
    reserved: int
    admitted: int
    refused: int
    loop_lag: float
    draining: bool


class Admission:
    """Decides, call by call, whether this process takes it on."""

    def __init__(self, config: AdmissionConfig | None = None) -> None:
        self.config = config or AdmissionConfig()
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
        limit = self.config.max_calls
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

    def stream_started(self) -> None:
        """A media stream was accepted: it counts until :meth:`stream_ended`."""
        self._streaming += 1

    def claim(self, call_sid: str) -> None:
        """The stream of ``call_sid`` has said who it is: its reservation, if it was admitted
        here, is now counted by its stream."""
        self._reserved.pop(call_sid, None)

    def stream_ended(self) -> None:
        """A media stream that :meth:`stream_started` counted has ended."""
        self._streaming = max(0, self._streaming - 1)

    def note_loop_lag(self, seconds: float) -> None:
        """Record the event loop's latest measured lag."""
        self._loop_lag = max(0.0, seconds)

    def drain(self) -> None:
        """Refuse every new call from now on (shutdown has begun)."""
        self._draining = True

    def statistics(self) -> AdmissionStatistics:
        """A snapshot of the counters."""
        return AdmissionStatistics(
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
