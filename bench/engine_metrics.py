"""What the server says about itself: its ``/metrics``, scraped and summarized for the report.

The per-step timings (decode, VAD, stage, encode, socket) and the in-engine round trip are
sampled histograms (``voice_engine_frame_step_seconds``, ``voice_engine_frame_round_trip_seconds``);
this turns their cumulative buckets into counts per bucket and bucket-interpolated percentiles.

The steps are sampled, so a run may hold fewer of them than there are steps: the engine times
one call in ``SessionConfig.probe_every`` (16; the first call always), and a step a pipeline
never runs is never timed (``echo`` decodes no μ-law and detects no turns: no ``decode``, no
``vad``). :func:`summarize` keeps what has samples and :func:`missing` says why the rest is not
there; nothing here fails on an absent or empty histogram, or on a server without ``/metrics``
(:func:`read_server` then returns ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "Histogram",
    "ServerView",
    "counters",
    "histograms",
    "labelled",
    "missing",
    "read_server",
    "scrape",
    "server_view",
    "summarize",
]

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


def scrape(url: str, timeout: float = 10.0) -> str:
    """The server's ``/metrics`` text."""
    response = httpx.get(f"{url}/metrics", timeout=timeout)
    response.raise_for_status()
    return response.text


@dataclass
class ServerView:
    """What a voice-engine server's ``/metrics`` says about admission at one moment."""

    ceiling: int | None
    """``voice_engine_call_ceiling`` (summed over workers); ``None`` when it has none."""
    admitted: float
    """``voice_engine_calls_admitted_total``."""
    refused: dict[str, float] = field(default_factory=dict)
    """``voice_engine_calls_refused_total`` by reason (``call-ceiling``, ``loop-lag``, …)."""
    text: str = ""
    """The whole exposition (for :func:`histograms`)."""


def read_server(url: str | None, timeout: float = 10.0) -> ServerView | None:
    """Scrape ``url``'s ``/metrics`` as a :class:`ServerView`; ``None`` without a URL, when it
    does not answer 200 within ``timeout`` seconds, or when what it answers is not a
    voice-engine server's metrics."""
    if not url:
        return None
    try:
        return server_view(scrape(url, timeout))
    except httpx.HTTPError:
        return None


def server_view(text: str) -> ServerView | None:
    """A :class:`ServerView` of a ``/metrics`` text; ``None`` if it is not a voice-engine
    server's (or not Prometheus text at all)."""
    try:
        totals = counters(text)
        refused = labelled(text, "voice_engine_calls_refused_total", "reason")
    except (ValueError, KeyError, TypeError):
        return None
    if "voice_engine_calls_admitted_total" not in totals:
        return None
    ceiling = totals.get("voice_engine_call_ceiling")
    return ServerView(
        ceiling=int(ceiling) if ceiling else None,
        admitted=totals["voice_engine_calls_admitted_total"],
        refused=refused,
        text=text,
    )


def labelled(text: str, sample: str, label: str) -> dict[str, float]:
    """The samples named ``sample``, summed by the value of ``label``."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample:
                key = s.labels.get(label, "")
                out[key] = out.get(key, 0.0) + s.value
    return out


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
WHY_ABSENT = {
    "decode": "no μ-law was decoded (decoded only for the turn detector or a stage that reads "
    "samples; echo does neither)",
    "vad": "no turn detection ran (echo has none)",
    "stage": "no stage handled frames inline",
    "encode": "playout built no message (echo's fast lane writes frames through unqueued)",
    "socket": "no reply frame was timed",
    "round-trip": "no reply frame was timed against the frame that caused it",
}
"""Why a step may have no samples in a run, besides no call of the run being timed."""


def missing(found: Iterable[str]) -> dict[str, str]:
    """The steps of :data:`STEP_ORDER` without samples in ``found``, with the likely reason."""
    present = set(found)
    return {step: WHY_ABSENT[step] for step in STEP_ORDER if step not in present}


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
