"""What the server says about itself: its ``/metrics``, scraped and summarized for the report.

The per-step timings (decode, VAD, stage, encode, socket) and the in-engine round trip are
sampled histograms (``voice_engine_frame_step_seconds``, ``voice_engine_frame_round_trip_seconds``);
this turns their cumulative buckets into counts per bucket and bucket-interpolated percentiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Histogram", "counters", "histograms", "scrape", "summarize"]

STEP_METRIC = "voice_engine_frame_step_seconds"
ROUND_TRIP_METRIC = "voice_engine_frame_round_trip_seconds"


@dataclass
class Histogram:
    """One histogram's buckets: upper bounds (µs) and the count in each (not cumulative)."""

    name: str
    bounds_us: list[float]
    counts: list[int]
    sum_us: float

    @property
    def total(self) -> int:
        """Observations."""
        return sum(self.counts)

    @property
    def mean_us(self) -> float:
        """Mean observation (µs), or NaN without any."""
        return self.sum_us / self.total if self.total else math.nan

    def percentile_us(self, p: float) -> float:
        """The ``p``-th percentile, interpolated linearly inside its bucket (NaN if empty;
        the last finite bound when it falls in the +Inf bucket)."""
        total = self.total
        if not total:
            return math.nan
        rank = total * p / 100
        seen, lower = 0, 0.0
        for bound, count in zip(self.bounds_us, self.counts, strict=True):
            if count and seen + count >= rank:
                if math.isinf(bound):
                    return lower
                return lower + (bound - lower) * (rank - seen) / count
            seen += count
            lower = bound if not math.isinf(bound) else lower
        return lower


def scrape(url: str) -> str:
    """The server's ``/metrics`` text."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    response.raise_for_status()
    return response.text


def counters(text: str) -> dict[str, float]:
    """Every sample summed over its labels: ``{sample name: value}``."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def histograms(text: str) -> dict[str, Histogram]:
    """The per-step histograms by step name, plus ``round-trip`` for the in-engine round trip."""
    cumulative: dict[str, list[tuple[float, float]]] = {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (STEP_METRIC, ROUND_TRIP_METRIC):
            continue
        for sample in family.samples:
            key = sample.labels.get("step", "round-trip")
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                cumulative.setdefault(key, []).append((bound * 1e6, sample.value))
            elif sample.name.endswith("_sum"):
                sums[key] = sample.value * 1e6
    out: dict[str, Histogram] = {}
    for key, buckets in cumulative.items():
        buckets.sort()
        counts, previous = [], 0.0
        for _, value in buckets:
            counts.append(int(value - previous))
            previous = value
        out[key] = Histogram(key, [b for b, _ in buckets], counts, sums.get(key, 0.0))
    return out


STEP_ORDER = ("decode", "vad", "stage", "encode", "socket", "round-trip")


def summarize(found: dict[str, Histogram]) -> dict[str, dict[str, object]]:
    """For the report: per step, samples, mean / p50 / p99 (µs) and the buckets themselves."""
    ordered = sorted(found, key=lambda k: STEP_ORDER.index(k) if k in STEP_ORDER else 99)
    return {
        key: {
            "samples": found[key].total,
            "mean_us": round(found[key].mean_us, 1),
            "p50_us": round(found[key].percentile_us(50), 1),
            "p99_us": round(found[key].percentile_us(99), 1),
            "bounds_us": found[key].bounds_us,
            "counts": found[key].counts,
        }
        for key in ordered
        if found[key].total
    }
