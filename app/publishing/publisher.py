"""The publisher: routes, serializes and hands events to Kafka, and tells each caller what happened.

A 2xx to the client means Kafka acknowledged every record of the event (`acks=all`, idempotent
producer). Records of concurrent requests share the producer's batches: nothing here flushes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from app.events.models import BaseEvent
from app.observability.publisher_metrics import PublisherMetrics
from app.publishing.breaker import DeliveryBreaker, OutageError
from app.publishing.errors import BrokerUnavailableError, DeliveryError, QueueFullError
from app.publishing.producer import AsyncProducer, DeliveryReport, Headers
from app.routing.router import Route, Router
from app.serialization.codecs import EventSerializer

logger = logging.getLogger(__name__)

# How much longer than librdkafka's own message.timeout.ms we wait before giving up on a report.
ACK_GRACE_SECONDS = 5.0


class Outcome(StrEnum):
    """What happened to one event."""

    ACCEPTED = "accepted"
    UNROUTED = "unrouted"
    FAILED = "failed"


class FailureCode(StrEnum):
    """Machine-readable reason an event was not accepted (the `code` in error bodies)."""

    QUEUE_FULL = "queue_full"
    BROKER_UNAVAILABLE = "broker_unavailable"
    RECORD_REJECTED = "record_rejected"


@dataclass(frozen=True, slots=True)
class PublishFailure:
    """Why an event was not accepted, and whether sending it again may work."""

    code: FailureCode
    message: str
    retriable: bool
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The answer for one event."""

    event_id: uuid.UUID
    outcome: Outcome
    topics: tuple[str, ...] = ()
    failure: PublishFailure | None = None


@dataclass(slots=True)
class _Pending:
    index: int
    topic: str
    future: asyncio.Future[DeliveryReport]


class EventPublisher:
    """Publishes validated events to the topics the router picks."""

    def __init__(
        self,
        producer: AsyncProducer,
        router: Router,
        serializer: EventSerializer,
        metrics: PublisherMetrics,
        breaker: DeliveryBreaker,
        ack_timeout: float,
    ) -> None:
        self.producer = producer
        self.router = router
        self.serializer = serializer
        self.metrics = metrics
        self.breaker = breaker
        self._ack_timeout = ack_timeout + ACK_GRACE_SECONDS

    async def publish(self, event: BaseEvent, traceparent: str | None = None) -> PublishResult:
        """Publish one event to every topic its route names."""
        (result,) = await self.publish_many([event], traceparent)
        return result

    async def publish_many(
        self, events: Sequence[BaseEvent], traceparent: str | None = None
    ) -> list[PublishResult]:
        """Publish events in order (so each user's events stay in order); one result per event."""
        routes = [self.router.route(event) for event in events]
        results: list[PublishResult | None] = [None] * len(events)
        for index, (event, route) in enumerate(zip(events, routes, strict=True)):
            if route.unrouted:
                self.metrics.record_unrouted(event.event_type)
                results[index] = PublishResult(event.event_id, Outcome.UNROUTED)
        try:
            async with self.breaker.guard():
                outage = await self._deliver(events, routes, results, traceparent)
                if outage:
                    raise OutageError(outage)
        except OutageError:
            pass  # counted by the breaker; the affected results already say broker_unavailable
        except BrokerUnavailableError as exc:
            failure = PublishFailure(
                FailureCode.BROKER_UNAVAILABLE,
                "Kafka is unavailable (circuit breaker open)",
                True,
                exc.retry_after,
            )
            refused = [index for index, result in enumerate(results) if result is None]
            for index in refused:
                results[index] = PublishResult(
                    events[index].event_id, Outcome.FAILED, routes[index].topics, failure
                )
            self.metrics.record_rejected("broker_unavailable", len(refused))
        return [result for result in results if result is not None]

    async def _deliver(
        self,
        events: Sequence[BaseEvent],
        routes: list[Route],
        results: list[PublishResult | None],
        traceparent: str | None,
    ) -> str:
        """Enqueue every routed record, wait for Kafka's reports, fill `results`; returns an outage reason."""
        pending: list[_Pending] = []
        failures: dict[int, PublishFailure] = {}
        for index, (event, route) in enumerate(zip(events, routes, strict=True)):
            if route.unrouted:
                continue
            try:
                value = self.serializer.serialize(event)
                headers = self._headers(event, traceparent)
                key = event.user_id.encode()
                for topic in route.topics:
                    pending.append(_Pending(index, topic, self.producer.produce(topic, value, key, headers)))
            except QueueFullError as exc:
                failures[index] = PublishFailure(
                    FailureCode.QUEUE_FULL, f"publisher queue is full: {exc}", True, 1.0
                )
                self.metrics.record_rejected("queue_full")
            except DeliveryError as exc:
                failures[index] = _permanent(exc)
                self.metrics.record_failed(exc.topic, exc.name)

        outage = ""
        if pending:
            _, not_done = await asyncio.wait([item.future for item in pending], timeout=self._ack_timeout)
            for future in not_done:
                future.cancel()
            for item in pending:
                error = _delivery_error(item)
                if error is None:
                    report = item.future.result()
                    self.metrics.record_published(item.topic, report.latency_seconds)
                    continue
                self.metrics.record_failed(item.topic, error.name)
                logger.warning(
                    "delivery failed",
                    extra={
                        "event_id": str(events[item.index].event_id),
                        "topic": item.topic,
                        "reason": str(error),
                    },
                )
                if error.retriable:
                    outage = str(error)
                    failures.setdefault(
                        item.index,
                        PublishFailure(
                            FailureCode.BROKER_UNAVAILABLE, f"Kafka did not acknowledge: {error}", True, 1.0
                        ),
                    )
                else:
                    failures[item.index] = _permanent(error)

        for index, (event, route) in enumerate(zip(events, routes, strict=True)):
            if results[index] is not None:
                continue
            failure = failures.get(index)
            outcome = Outcome.ACCEPTED if failure is None else Outcome.FAILED
            results[index] = PublishResult(event.event_id, outcome, route.topics, failure)
        if outage:
            self.metrics.record_rejected(
                "broker_unavailable",
                sum(1 for failure in failures.values() if failure.code is FailureCode.BROKER_UNAVAILABLE),
            )
        return outage

    def _headers(self, event: BaseEvent, traceparent: str | None) -> Headers:
        headers: Headers = [
            ("event_id", str(event.event_id).encode()),
            ("event_type", event.event_type.encode()),
            ("schema_version", str(event.schema_version).encode()),
            ("content_type", self.serializer.content_type.encode()),
        ]
        if traceparent:
            headers.append(("traceparent", traceparent.encode()))
        return headers


def _delivery_error(item: _Pending) -> DeliveryError | None:
    future = item.future
    if future.cancelled():
        return DeliveryError(item.topic, -1, "ACK_TIMEOUT", "no delivery report in time", True)
    error = future.exception()
    if error is None:
        return None
    if isinstance(error, DeliveryError):
        return error
    return DeliveryError(item.topic, -1, type(error).__name__, str(error), True)


def _permanent(error: DeliveryError) -> PublishFailure:
    return PublishFailure(FailureCode.RECORD_REJECTED, f"Kafka refused the record: {error}", False)
