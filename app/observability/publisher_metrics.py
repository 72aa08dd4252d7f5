"""What the publisher did, counted once and shown two ways: JSON for curl, Prometheus for scraping."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.observability.rolling import RollingCounts

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# prometheus-client decides this once, at import, from the environment (set by app.main for WORKERS > 1).
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
EMA_ALPHA = 0.1  # weight of the newest latency sample in the moving average, as in the Go publisher


@dataclass(slots=True)
class PublisherCounts:
    """The publisher's counts, of one worker or (added up) of the whole service."""

    published: int = 0
    failed: int = 0
    retried: int = 0
    dlq: int = 0
    unrouted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    producer_restarts: int = 0
    spooled: int = 0
    relayed: int = 0
    duplicate: int = 0
    per_topic: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The counting part of `GET /metrics/publisher`."""
        finished = self.published + self.failed
        return {
            "events_published": self.published,
            "events_failed": self.failed,
            "events_retried": self.retried,
            "events_dlq": self.dlq,
            "events_unrouted": self.unrouted,
            "events_rejected": dict(self.rejected),
            "producer_restarts": self.producer_restarts,
            "records_spooled": self.spooled,
            "records_relayed": self.relayed,
            "events_duplicate": self.duplicate,
            "success_rate": _ratio(self.published, finished, empty=1.0),
            "error_rate": _ratio(self.failed, finished),
            "dlq_rate": _ratio(self.dlq, finished),
            "topics": {topic: dict(counts) for topic, counts in sorted(self.per_topic.items())},
        }


class PublisherMetrics:
    """Counters of one worker process. Every `record_*` call updates both views."""

    def __init__(self, registry: CollectorRegistry, window_seconds: float) -> None:
        self.events_published = 0
        self.events_failed = 0
        self.events_retried = 0
        self.events_dlq = 0
        self.events_unrouted = 0
        self.events_rejected: dict[str, int] = defaultdict(int)
        self.producer_restarts = 0
        self.events_spooled = 0
        self.events_relayed = 0
        self.events_duplicate = 0
        self.per_topic: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.average_latency_ms: float | None = None
        self.last_publish_epoch: float | None = None
        self.recent = RollingCounts(window_seconds)
        self._live: dict[Gauge, Callable[[], float]] = {}

        self._published = Counter(
            "event_ingest_events_published_total",
            "Records Kafka acknowledged, per topic.",
            ["topic"],
            registry=registry,
        )
        self._published_by_topic: dict[str, Counter] = {}
        self._failed = Counter(
            "event_ingest_events_failed_total",
            "Records Kafka did not acknowledge, per topic and error.",
            ["topic", "reason"],
            registry=registry,
        )
        self._retried = Counter(
            "event_ingest_events_retried_total",
            "Records published again after a failure.",
            ["topic"],
            registry=registry,
        )
        self._dlq = Counter(
            "event_ingest_events_dlq_total",
            "Records written to the dead-letter topic.",
            ["original_topic"],
            registry=registry,
        )
        self._by_type = Counter(
            "event_ingest_events_total",
            "Valid events per event type (built-in or registered) and answer: accepted, spooled, "
            "unrouted, duplicate, rejected.",
            ["event_type", "status"],
            registry=registry,
        )
        self._unrouted = Counter(
            "event_ingest_events_unrouted_total",
            "Valid events that no routing rule matched.",
            ["event_type"],
            registry=registry,
        )
        self._rejected = Counter(
            "event_ingest_events_rejected_total",
            "Events not accepted (validation, queue full, broker unavailable).",
            ["reason"],
            registry=registry,
        )
        self._latency = Histogram(
            "event_ingest_publish_latency_seconds",
            "Time from produce() to Kafka's acknowledgement: one observation per request and topic "
            "(its slowest record).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._producer_restarts = Counter(
            "event_ingest_producer_restarts_total",
            "Producers replaced after a fatal librdkafka error (e.g. PRODUCER_FENCED).",
            registry=registry,
        )
        self._spooled = Counter(
            "event_ingest_records_spooled_total",
            "Records written to the spool instead of Kafka.",
            registry=registry,
        )
        self._relayed = Counter(
            "event_ingest_records_relayed_total", "Spooled records the relay delivered.", registry=registry
        )
        self._duplicate = Counter(
            "event_ingest_events_duplicate_total",
            "Events answered `duplicate` (repeated client_attempt_id or Idempotency-Key).",
            registry=registry,
        )
        # multiprocess_mode: how several workers' values combine (prometheus-client multiprocess
        # mode, WORKERS > 1). The spool is shared, so its gauges take the maximum; queues add up.
        self.spool_depth = Gauge(
            "event_ingest_spool_depth",
            "Records waiting in the spool.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.spool_oldest_age = Gauge(
            "event_ingest_spool_oldest_age_seconds",
            "Age of the oldest spooled record.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.in_flight = Gauge(
            "event_ingest_records_in_flight",
            "Records awaiting Kafka's acknowledgement in requests.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.breaker_state = Gauge(
            "event_ingest_circuit_breaker_state",
            "Kafka delivery circuit breaker: 0 closed, 1 half-open, 2 open (the worst worker's).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.ready = Gauge(
            "event_ingest_ready",
            "1 when the last readiness check reached Kafka and the service is not shutting down.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.queue_length = Gauge(
            "event_ingest_producer_queue_length",
            "Records waiting in the producer's queue for Kafka's acknowledgement.",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def bind_live_values(self, live: dict[Gauge, Callable[[], float]]) -> None:
        """Gauges whose value is read from the service's state.

        One process: read at every scrape. Several workers (multiprocess mode): a scrape reads
        the values files, not our objects, so `refresh_live_values` writes them (each relay round).
        """
        self._live.update(live)
        if not MULTIPROCESS:
            for gauge, read in live.items():
                gauge.set_function(read)

    def refresh_live_values(self) -> None:
        if MULTIPROCESS:
            for gauge, read in self._live.items():
                gauge.set(read())

    def record_published(self, topic: str, count: int, latency_seconds: float) -> None:
        """`count` records of one topic acknowledged for one request; the slowest took `latency_seconds`.

        The latency histogram has one observation per request and topic, not per record: the
        records of a request are acknowledged together, and a histogram observation costs as
        much as the rest of a record's bookkeeping.
        """
        if not count:
            return
        self.events_published += count
        self.per_topic[topic]["published"] += count
        # Hot path: look the labelled child up once per topic, not on every record.
        child = self._published_by_topic.get(topic)
        if child is None:
            child = self._published_by_topic[topic] = self._published.labels(topic)
        child.inc(count)
        self._latency.observe(latency_seconds)
        latency_ms = latency_seconds * 1000
        previous = self.average_latency_ms
        self.average_latency_ms = (
            latency_ms if previous is None else previous + EMA_ALPHA * (latency_ms - previous)
        )
        self.last_publish_epoch = time.time()  # a float here; formatted only when shown
        self.recent.add("published", count)

    def record_failed(self, topic: str, reason: str) -> None:
        self.events_failed += 1
        self.per_topic[topic]["failed"] += 1
        self._failed.labels(topic, reason).inc()
        self.recent.add("failed")

    def record_retried(self, topic: str) -> None:
        self.events_retried += 1
        self.per_topic[topic]["retried"] += 1
        self._retried.labels(topic).inc()

    def record_dlq(self, original_topic: str) -> None:
        self.events_dlq += 1
        self.per_topic[original_topic]["dlq"] += 1
        self._dlq.labels(original_topic).inc()
        self.recent.add("dlq")

    def record_events(self, counts: Mapping[tuple[str, str], int]) -> None:
        """A request's valid events, counted per (event type, status): one increment per pair."""
        for (event_type, status), count in counts.items():
            self._by_type.labels(event_type, status).inc(count)

    def record_unrouted(self, event_type: str) -> None:
        self.events_unrouted += 1
        self._unrouted.labels(event_type).inc()

    def record_rejected(self, reason: str, count: int = 1) -> None:
        self.events_rejected[reason] += count
        self._rejected.labels(reason).inc(count)

    def record_spooled(self, count: int) -> None:
        self.events_spooled += count
        self._spooled.inc(count)

    def record_relayed(self, count: int) -> None:
        self.events_relayed += count
        self._relayed.inc(count)

    def record_duplicate(self) -> None:
        self.events_duplicate += 1
        self._duplicate.inc()

    def record_producer_restart(self) -> None:
        self.producer_restarts += 1
        self._producer_restarts.inc()

    def counts(self) -> PublisherCounts:
        return PublisherCounts(
            published=self.events_published,
            failed=self.events_failed,
            retried=self.events_retried,
            dlq=self.events_dlq,
            unrouted=self.events_unrouted,
            rejected=dict(self.events_rejected),
            producer_restarts=self.producer_restarts,
            spooled=self.events_spooled,
            relayed=self.events_relayed,
            duplicate=self.events_duplicate,
            per_topic={topic: dict(counts) for topic, counts in self.per_topic.items()},
        )

    def snapshot(self) -> dict[str, Any]:
        """The JSON body of `GET /metrics/publisher?scope=worker` (without the runtime's state)."""
        return {
            "scope": "worker",
            "pid": os.getpid(),
            **self.counts().as_json(),
            "average_latency_ms": None
            if self.average_latency_ms is None
            else round(self.average_latency_ms, 3),
            "last_publish_time": iso_time(self.last_publish_epoch),
        }


def iso_time(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _ratio(part: int, whole: int, empty: float = 0.0) -> float:
    return round(part / whole, 6) if whole else empty
