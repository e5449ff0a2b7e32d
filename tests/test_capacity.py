"""Tests for engine.capacity: the ceiling from a call's measured CPU cost."""

from __future__ import annotations

import pytest

from engine.capacity import (
    FRAMES_PER_SECOND,
    IN_SERVICE,
    MIN_FRAMES_PER_UPDATE,
    CapacityEstimate,
    measure_frame_cost,
)


@pytest.mark.parametrize(
    ("frame_cost", "budget", "ceiling"),
    [
        (50e-6, 0.8, 320),  # 0.8 s of CPU a second / (50 µs × 50 frames a second)
        (64e-6, 0.8, 250),
        (100e-6, 0.5, 100),
        (0.1, 0.8, 1),  # never below one call
    ],
)
def test_the_ceiling_is_the_budget_over_a_calls_cost(
    frame_cost: float, budget: float, ceiling: int
) -> None:
    assert CapacityEstimate(frame_cost, budget).ceiling == ceiling


def test_a_calibration_is_scaled_to_what_a_frame_costs_in_service() -> None:
    estimate = CapacityEstimate.calibrated(40e-6, budget=0.8)
    assert estimate.frame_cost == pytest.approx(40e-6 * IN_SERVICE)
    assert estimate.ceiling == CapacityEstimate(40e-6 * IN_SERVICE, 0.8).ceiling < 400
    assert estimate.measured_frames == 0  # nothing of real calls folded in yet


def test_service_refines_the_cost_once_enough_frames_flow() -> None:
    estimate = CapacityEstimate(100e-6)
    estimate.update(cpu_seconds=1.0, frames=MIN_FRAMES_PER_UPDATE - 1)  # too few to tell
    assert estimate.frame_cost == 100e-6 and estimate.measured_frames == 0
    for _ in range(60):  # a minute of 200 calls costing 50 µs a frame
        estimate.update(cpu_seconds=200 * FRAMES_PER_SECOND * 50e-6, frames=200 * 50)
    assert estimate.frame_cost == pytest.approx(50e-6, rel=0.01)
    assert estimate.ceiling in (399, 400)  # a core / (50 µs × 50)
    assert estimate.measured_frames == 60 * 200 * 50


async def test_the_real_media_path_is_measured() -> None:
    cost = await measure_frame_cost(calls=4, frames=50)
    assert 1e-6 < cost < 0.01  # seconds of CPU per echoed frame, whatever the machine
