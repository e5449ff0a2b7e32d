"""Tests for engine.quiet: a repeated event logged once in a while, with its count."""

from __future__ import annotations

from engine.quiet import LogLimiter


def test_the_first_is_logged_then_one_line_per_period_with_the_count() -> None:
    limiter = LogLimiter(period=10.0)
    notes = [limiter.note("busy", t) for t in (0.0, 1.0, 2.0, 9.9, 10.0, 10.5, 25.0)]
    assert notes == [1, 0, 0, 0, 4, 0, 2]


def test_kinds_are_counted_apart() -> None:
    limiter = LogLimiter(period=10.0)
    assert limiter.note("busy", 0.0) == 1
    assert limiter.note("descriptors", 0.5) == 1
    assert limiter.note("busy", 1.0) == 0
    assert limiter.note("descriptors", 11.0) == 1
    assert limiter.note("busy", 11.0) == 2  # the silent one at 1.0, and this one
