"""Admission control's bookkeeping (sans-IO, time passed in)."""

from __future__ import annotations

import pytest

from engine.admission import Admission, AdmissionConfig
from engine.errors import ConfigError


def test_no_ceiling_admits_everything() -> None:
    admission = Admission()
    assert all(admission.admit(f"CA{i}", 0.0) is None for i in range(1000))
    assert admission.statistics().admitted == 1000


def test_reservations_count_against_the_ceiling_until_they_lapse() -> None:
    admission = Admission(AdmissionConfig(max_calls=2, reservation_ttl=10))
    assert admission.admit("CA1", 0.0) is None
    assert admission.admit("CA2", 1.0) is None
    assert admission.admit("CA3", 2.0) == "call-ceiling"
    assert admission.admit("CA3", 10.5) is None  # CA1's stream never came: its slot lapsed
    assert admission.admit("CA4", 10.6) == "call-ceiling"
    stats = admission.statistics()
    assert (stats.admitted, stats.refused, stats.reserved) == (3, 2, 2)


def test_a_claimed_reservation_is_counted_once_by_its_stream() -> None:
    admission = Admission(AdmissionConfig(max_calls=2))
    assert admission.admit("CA1", 0.0) is None
    admission.stream_started("CA1")
    assert admission.statistics().streaming == 1
    assert admission.statistics().reserved == 0
    assert admission.admit("CA2", 0.0) is None  # one stream + one reservation
    assert admission.admit("CA3", 0.0) == "call-ceiling"
    admission.stream_ended()
    assert admission.admit("CA3", 0.0) is None


def test_streams_admitted_elsewhere_still_count() -> None:
    # A stream whose webhook another worker answered: no reservation here, still a call here.
    admission = Admission(AdmissionConfig(max_calls=1))
    admission.stream_started("CA-from-another-worker")
    assert admission.refusal(0.0) == "call-ceiling"
    admission.stream_ended()
    admission.stream_ended()  # never below zero
    assert admission.statistics().streaming == 0
    assert admission.refusal(0.0) is None


@pytest.mark.parametrize(
    ("lag", "expected"), [(0.0, None), (0.049, None), (0.051, "loop-lag"), (5.0, "loop-lag")]
)
def test_event_loop_lag_beyond_the_limit_refuses(lag: float, expected: str | None) -> None:
    admission = Admission(AdmissionConfig(max_loop_lag=0.05))
    admission.note_loop_lag(lag)
    assert admission.admit("CA1", 0.0) == expected


def test_draining_refuses_everything_first() -> None:
    admission = Admission(AdmissionConfig(max_calls=0, max_loop_lag=0.01))
    admission.note_loop_lag(1.0)
    assert admission.refusal(0.0) == "call-ceiling"
    admission.drain()
    assert admission.refusal(0.0) == "draining"
    assert admission.statistics().draining


@pytest.mark.parametrize(
    "options",
    [{"max_calls": -1}, {"max_loop_lag": 0}, {"max_loop_lag": -1.0}, {"reservation_ttl": 0}],
)
def test_nonsense_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        AdmissionConfig(**options)  # type: ignore[arg-type]


def test_the_ceiling_is_exact_while_calls_set_up_at_once() -> None:
    # Ten calls admitted at once, their streams arriving interleaved with more webhooks:
    # exactly ten are carried, never nine (a stream counted beside its reservation).
    admission = Admission(AdmissionConfig(max_calls=10))
    assert all(admission.admit(f"CA{i}", 0.0) is None for i in range(10))
    for i in range(10):
        admission.stream_started(f"CA{i}")
        assert admission.admit(f"CB{i}", 0.0) == "call-ceiling"
        stats = admission.statistics()
        assert stats.streaming + stats.reserved == 10
