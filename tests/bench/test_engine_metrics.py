"""Reading the server's histograms back from its /metrics text."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bench.engine_metrics import (
    counters,
    histograms,
    labelled,
    missing,
    read_server,
    server_view,
    summarize,
)


def exposition(observations: dict[str, list[float]]) -> str:
    registry = CollectorRegistry()
    steps = Histogram(
        "voice_engine_frame_step_seconds",
        "steps",
        ["step"],
        buckets=(10e-6, 20e-6, 50e-6, 100e-6),
        registry=registry,
    )
    for step, values in observations.items():
        child = steps.labels(step)
        for value in values:
            child.observe(value)
    return generate_latest(registry).decode()


def test_buckets_come_back_as_counts_with_percentiles_inside_them() -> None:
    text = exposition({"decode": [5e-6] * 50 + [15e-6] * 49 + [1.0], "vad": [30e-6] * 4})
    found = histograms(text)
    decode = found["decode"]
    assert decode.bounds_us == [10.0, 20.0, 50.0, 100.0, math.inf]
    assert decode.counts == [50, 49, 0, 0, 1]
    assert decode.total == 100
    assert decode.percentile_us(50) == pytest.approx(10.0)  # the 50th of 100 closes bucket 1
    assert 10 < decode.percentile_us(75) < 20
    assert decode.percentile_us(100) == 100.0  # in +Inf: the last finite bound
    assert decode.mean_us == pytest.approx((50 * 5 + 49 * 15 + 1e6) / 100)
    assert found["vad"].counts == [0, 0, 4, 0, 0]
    summary = summarize(found)
    assert list(summary) == ["decode", "vad"]  # the media path's order
    assert summary["vad"]["samples"] == 4


def test_an_empty_histogram_has_no_percentile_and_is_left_out() -> None:
    found = histograms(exposition({"stage": []}))
    assert found["stage"].total == 0
    assert math.isnan(found["stage"].percentile_us(50))
    assert math.isnan(found["stage"].mean_us)
    assert summarize(found) == {}


def test_counters_sum_over_labels() -> None:
    text = exposition({"decode": [1e-6, 2e-6], "vad": [3e-6]})
    assert counters(text)["voice_engine_frame_step_seconds_count"] == 3


def test_a_servers_admission_is_read_from_its_metrics() -> None:
    from prometheus_client import Counter, Gauge

    registry = CollectorRegistry()
    Gauge("voice_engine_call_ceiling", "c", registry=registry).set(143)
    Counter("voice_engine_calls_admitted", "a", registry=registry).inc(5)
    refused = Counter("voice_engine_calls_refused", "r", ["reason"], registry=registry)
    refused.labels("call-ceiling").inc(7)
    refused.labels("draining").inc(1)
    view = server_view(generate_latest(registry).decode())
    assert view is not None
    assert (view.ceiling, view.admitted) == (143, 5)
    assert view.refused == {"call-ceiling": 7, "draining": 1}
    assert labelled(view.text, "voice_engine_calls_refused_total", "reason") == view.refused


def test_what_is_not_a_voice_engine_servers_metrics_is_no_view() -> None:
    assert server_view(exposition({"decode": [1e-6]})) is None  # no admission counters
    assert server_view("<html>not metrics</html>") is None
    assert read_server(None) is None
    assert read_server("http://127.0.0.1:9") is None  # nobody there


def test_absent_steps_are_named_with_the_likely_reason() -> None:
    found = summarize(histograms(exposition({"stage": [3e-5], "decode": []})))
    absent = missing(found)
    assert list(found) == ["stage"]
    assert list(absent) == ["decode", "vad", "encode", "socket", "round-trip"]
    assert "echo" in absent["decode"] and all(absent.values())
