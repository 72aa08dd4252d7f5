"""The delivery core the request path (publisher) and the spool relay share.

Both hand records to a producer, wait for Kafka's reports, and sort each record by what to do next:
acknowledged, an outage (send again later), a bad record (dead-letter it), backpressure (the
producer's queue is full). What differs is what they do with each kind: a request retries within
its deadline and spools the rest, the relay releases rows for a later round. The producer is
behind a small protocol, so those decisions are tested with a fake one as well as with brokers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.observability.publisher_metrics import PublisherMetrics
from app.publishing.errors import DeliveryError, QueueFullError
from app.publishing.producer import Delivery, Headers
from app.publishing.records import dead_letter_headers

# How much longer than librdkafka's own message.timeout.ms a sender waits for delivery reports.
ACK_GRACE_SECONDS = 2.0

# (topic, value, key, headers), as the producer takes a record
ProducedRecord = tuple[str, bytes, bytes | None, Headers]


class RecordSender(Protocol):
    """What the delivery core needs of a producer (`AsyncProducer`, or a fake in unit tests)."""

    broker_failed_at: float  # time.monotonic() of the last failed broker connection

    def send(self, records: Sequence[ProducedRecord]) -> Delivery: ...


@dataclass(slots=True)
class SortedReports:
    """A delivery's records (by index), sorted by what to do with them next."""

    acknowledged: list[int] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)  # the acknowledged, by topic
    outage: list[tuple[int, DeliveryError]] = field(default_factory=list)  # may succeed later
    permanent: list[tuple[int, DeliveryError]] = field(default_factory=list)  # never will: dead-letter
    queue_full: list[tuple[int, QueueFullError]] = field(default_factory=list)  # backpressure
    unreported: list[int] = field(default_factory=list)  # still in the producer when we stopped waiting


def sort_reports(delivery: Delivery, *, stopped_early: bool = False) -> SortedReports:
    """Sort a delivery's records after waiting for it. A record without a report is a timeout (an
    outage), unless the caller `stopped_early` on purpose: then it is `unreported`."""
    reports = SortedReports()
    topics = delivery.topics
    for index, outcome in enumerate(delivery.outcomes):
        if type(outcome) is float:  # acknowledged: the common case, checked without a call
            reports.acknowledged.append(index)
            reports.latencies.setdefault(topics[index], []).append(outcome)
            continue
        if outcome is None and stopped_early:
            reports.unreported.append(index)
            continue
        error = delivery.error(index)
        if isinstance(error, QueueFullError):
            reports.queue_full.append((index, error))
        elif error is not None:
            (reports.outage if error.retriable else reports.permanent).append((index, error))
    return reports


def count_acknowledged(metrics: PublisherMetrics, latencies: dict[str, list[float]]) -> None:
    """One histogram observation per topic of a delivery: its slowest record (see record_published)."""
    for topic, observed in latencies.items():
        metrics.record_published(topic, len(observed), max(observed))


def dead_letter(
    dlq_topic: str,
    original_topic: str,
    key: bytes | None,
    value: bytes,
    headers: Headers,
    reason: str,
    attempts: int,
) -> ProducedRecord:
    """A record bound for the dead-letter topic: key and value byte for byte, the reason in headers."""
    return (dlq_topic, value, key, dead_letter_headers(list(headers), original_topic, reason, attempts))
