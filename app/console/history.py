"""The last 15 minutes of the whole service's figures, for the console's overview chart.

Every worker samples the service's counts (summed over workers, exact whichever reads them) every
few seconds, so whichever worker serves the overview draws the same curves. Rates are differences
between samples; p50/p99 latency of the ingest routes comes from the difference between the oldest
and newest samples of their request-duration histogram.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from app.background import BackgroundLoop
from app.observability import service_view

logger = logging.getLogger(__name__)

SERIES = ("accepted", "published", "spooled", "dlq", "rejected", "duplicate")
INGEST_HANDLER_PREFIX = "/v1/events"


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # wall-clock seconds
    counts: dict[str, int]
    latency_buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count


def counts_of(metrics: dict[str, object]) -> dict[str, int]:
    """The charted counts out of a `/metrics/publisher` body."""
    rejected = metrics.get("events_rejected")
    return {
        "published": int(metrics.get("events_published", 0)),  # type: ignore[call-overload]
        "spooled": int(metrics.get("records_spooled", 0)),  # type: ignore[call-overload]
        "dlq": int(metrics.get("events_dlq", 0)),  # type: ignore[call-overload]
        "rejected": sum(rejected.values()) if isinstance(rejected, dict) else 0,
        "duplicate": int(metrics.get("events_duplicate", 0)),  # type: ignore[call-overload]
    }


@dataclass(frozen=True, slots=True)
class RequestFigures:
    """What the overview reads from the service's Prometheus figures rather than the publisher's."""

    accepted: int  # events answered `accepted` (Kafka acknowledged them)
    latency_buckets: dict[float, float]  # the ingest routes' request durations: bound -> cumulative count


def request_figures(registry: CollectorRegistry) -> RequestFigures:
    """Accepted events and the ingest routes' request-duration histogram, summed over event types and
    routes (and over workers when the service runs several: read from the multiprocess files)."""
    directory = service_view.multiprocess_directory()
    families: Iterable[Metric]
    if directory is not None:
        shared = CollectorRegistry()
        MultiProcessCollector(shared, path=str(directory))  # type: ignore[no-untyped-call]
        families = shared.collect()
    else:
        families = registry.collect()
    accepted = 0
    buckets: dict[float, float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name == "event_ingest_events_total" and sample.labels.get("status") == "accepted":
                accepted += int(sample.value)
            elif sample.name == "http_request_duration_seconds_bucket" and sample.labels.get(
                "handler", ""
            ).startswith(INGEST_HANDLER_PREFIX):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return RequestFigures(accepted, buckets)


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile by linear interpolation within cumulative buckets (as PromQL's
    histogram_quantile); None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower


class ServiceHistory:
    """Samples taken every `interval` seconds, kept for `span` seconds."""

    def __init__(
        self,
        read: Callable[[], Awaitable[Sample]],
        interval: float = 5.0,
        span: float = 900.0,
    ) -> None:
        self._read = read
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=int(span / interval) + 1)
        self._loop = BackgroundLoop("console-history", self._sample, interval, logger=logger)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _sample(self) -> None:
        self.samples.append(await self._read())

    def rates(self, latest: Sample | None = None) -> list[tuple[float, dict[str, float]]]:
        """Per-second rates between consecutive samples (and `latest`, taken now), at each interval's end."""
        samples = list(self.samples)
        if latest is not None:
            samples.append(latest)
        points = []
        for before, after in itertools.pairwise(samples):
            seconds = after.at - before.at
            if seconds <= 0:
                continue
            points.append(
                (
                    after.at,
                    {
                        name: max(0.0, (after.counts.get(name, 0) - before.counts.get(name, 0)) / seconds)
                        for name in SERIES
                    },
                )
            )
        return points

    def latency(self, latest: Sample) -> tuple[float | None, float | None]:
        """p50 and p99 (seconds) of the ingest requests answered since the oldest kept sample."""
        oldest = self.samples[0] if self.samples else Sample(at=time.time(), counts={})
        window = {
            bound: count - oldest.latency_buckets.get(bound, 0.0)
            for bound, count in latest.latency_buckets.items()
        }
        return quantile(window, 0.5), quantile(window, 0.99)
