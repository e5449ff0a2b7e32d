"""Logging what repeats without repeating it: :class:`LogLimiter` (sans-IO, time passed in).

A flood — refused connections, refused calls — must not flood the log: the first occurrence of
each kind is logged, then at most one line per ``period`` seconds, saying how many there were
since the last line.
"""

from __future__ import annotations

__all__ = ["LogLimiter"]


class LogLimiter:
    """Decides which occurrences of a repeated event are worth a log line."""

    __slots__ = ("_logged_at", "_period", "_since")

    def __init__(self, period: float = 10.0) -> None:
        self._period = period
        self._logged_at: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def note(self, kind: str, now: float) -> int:
        """Count one occurrence of ``kind``; the number of occurrences to report in a log line
        now (this one included), or 0 if this one should stay silent."""
        self._since[kind] = self._since.get(kind, 0) + 1
        last = self._logged_at.get(kind)
        if last is not None and now - last < self._period:
            return 0
        self._logged_at[kind] = now
        return self._since.pop(kind)
