"""The publisher: routes, serializes and hands events to Kafka, and tells each caller what happened.

The promise: an event answered 2xx is durable. It was acknowledged by Kafka (`acks=all`, idempotent
producer), or written to the spool, from which the relay delivers it once Kafka is back. Records of
concurrent requests share the producer's batches: nothing here flushes.

What happens to a record that Kafka does not acknowledge:
- an outage (timeout, transport, broker down, fatal producer): retried with backoff while the
  request's deadline allows, then spooled; counted against the circuit breaker;
- a bad record (too large, invalid or unauthorized topic): written to the dead-letter topic at once
  (or spooled for it, when the DLQ cannot be written either) and the event is answered 422.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError

from app.observability.publisher_metrics import PublisherMetrics
from app.observability.tracing import Tracing
from app.publishing.breaker import DeliveryBreaker
from app.publishing.delivery import (
    ACK_GRACE_SECONDS,
    RecordSender,
    count_acknowledged,
    dead_letter,
    sort_reports,
)
from app.publishing.errors import ACK_DEADLINE_PASSED, BrokerUnavailableError, DeliveryError
from app.publishing.pause import PauseSwitch
from app.publishing.producer import Delivery
from app.publishing.records import OutRecord, event_headers
from app.publishing.retry import RetryPolicy
from app.routing import templates
from app.routing.router import Route, Router
from app.serialization.codecs import EventSerializer, JsonSerializer
from app.spool.service import Spool
from app.spool.store import NewRecord, SpoolFullError
from event_models.models import BaseEvent
from event_models.outcomes import EventStatus, FailureCode

logger = logging.getLogger(__name__)

# A record reshaped by a message template is JSON whatever KAFKA_SERIALIZATION says.
JSON_CONTENT_TYPE = "application/json"
# More than the headers of any record take (event_id, event_type, schema_version, content_type,
# traceparent): a key and value shorter than KAFKA_MESSAGE_MAX_BYTES minus this always fit.
HEADER_BYTES_BOUND = 2048
# A broker connection that failed this long before a request's send still counts as a fault in
# progress for KAFKA_FAULT_ACK_DEADLINE (librdkafka reports a dead broker once, then on reconnects).
RECENT_BROKER_FAILURE_SECONDS = 30.0
# How often a request past KAFKA_FAULT_ACK_DEADLINE checks whether a broker failed meanwhile.
FAULT_CHECK_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class PublishFailure:
    """Why an event was not accepted, and whether sending it again may work."""

    code: FailureCode
    message: str
    retriable: bool
    retry_after: float | None = None
    dead_lettered: bool = False


@dataclass(slots=True)
class PublishResult:
    """The answer for one event. (Not frozen: a frozen dataclass sets each field through
    object.__setattr__, and one of these is made for every event.)"""

    event_id: str
    outcome: EventStatus  # accepted, spooled, unrouted, or rejected (with `failure`)
    topics: tuple[str, ...] = ()
    failure: PublishFailure | None = None


class EventPublisher:
    """Publishes validated events to the topics the router picks, keeping the durability promise."""

    def __init__(
        self,
        producer: RecordSender,
        router: Router,
        serializer: EventSerializer,
        metrics: PublisherMetrics,
        breaker: DeliveryBreaker,
        spool: Spool,
        retry: RetryPolicy,
        pause: PauseSwitch,
        *,
        ack_timeout: float,
        dlq_topic: str,
        max_record_bytes: int,
        max_in_flight: int,
        fault_ack_deadline: float = 0.0,
        tracing: Tracing | None = None,
    ) -> None:
        self.producer = producer
        self.tracing = tracing or Tracing()
        self.router = router
        self.serializer = serializer
        self._json = JsonSerializer()
        self.metrics = metrics
        self.breaker = breaker
        self.spool = spool
        self.retry = retry
        self.pause = pause  # POST /admin/publisher/pause: everything goes to the spool
        self.dlq_topic = dlq_topic
        self._ack_timeout = ack_timeout
        self._fault_ack_deadline = fault_ack_deadline
        self._max_record_bytes = max_record_bytes
        self._max_in_flight = max_in_flight
        self.in_flight = 0
        self.idle = asyncio.Event()  # set while no request awaits Kafka
        self.idle.set()
        self.draining = False  # set at shutdown: no more retries, what is not acknowledged is spooled

    async def publish_many(
        self,
        events: Sequence[BaseEvent],
        *,
        spool_only: bool = False,
        routes: Sequence[Route] | None = None,
        traceparents: Sequence[str | None] | None = None,
    ) -> list[PublishResult]:
        """Publish events in order (each user's events stay in order); one result per event.

        `spool_only` (ack level `spool`) answers once the records are in the spool and leaves
        the delivery to the relay. `routes`, when the caller has routed the events already;
        `traceparents`, one an event: its caller's trace context (events of a group come from
        different requests).
        """
        with self.tracing.span("route", **{"event_ingest.events": len(events)}):
            if routes is None:
                routes = [self.router.route(event) for event in events]
            # With tracing on, consumers continue the trace from this span, not the caller's.
            own = self.tracing.traceparent()
            if own is not None or traceparents is None:
                traceparents = [own] * len(events)
            records = self._records(events, routes, traceparents)
        if self.in_flight + len(records) > self._max_in_flight:
            failure = PublishFailure(
                FailureCode.QUEUE_FULL, f"more than {self._max_in_flight} records in flight", True, 1.0
            )
            self.metrics.record_rejected("queue_full", len(events))
            return [
                self._result(event, route, failure, False)
                for event, route in zip(events, routes, strict=True)
            ]

        self.in_flight += len(records)
        self.idle.clear()
        try:
            with self.tracing.span("publish", **{"event_ingest.records": len(records)}):
                return await self._publish_records(events, routes, records, spool_only)
        finally:
            self.in_flight -= len(records)
            if not self.in_flight:
                self.idle.set()

    async def _publish_records(
        self, events: Sequence[BaseEvent], routes: Sequence[Route], records: list[OutRecord], spool_only: bool
    ) -> list[PublishResult]:
        failures: dict[int, PublishFailure] = {}
        # Headers are a few hundred bytes: only a large key + value needs its exact size computed.
        near_limit = self._max_record_bytes - HEADER_BYTES_BOUND
        to_dead_letter = [
            record
            for record in records
            if len(record.value) + len(record.key or b"") > near_limit
            and record.size() > self._max_record_bytes
        ]
        for record in to_dead_letter:
            record.error = DeliveryError(
                record.topic,
                KafkaError.MSG_SIZE_TOO_LARGE,
                "MSG_SIZE_TOO_LARGE",
                f"record of {record.size()} bytes exceeds KAFKA_MESSAGE_MAX_BYTES={self._max_record_bytes}",
                False,
            )
            self._count_failure(record, record.error)
        sendable = [record for record in records if record.error is None]
        to_spool: list[tuple[OutRecord, str]] = []

        paused = self.pause.paused
        if spool_only or paused or self.breaker.rejecting():
            # Straight to the spool: no per-key backlog lookup is needed when nothing is sent.
            reason = "publisher paused" if paused else "ack=spool" if spool_only else "circuit breaker open"
            to_spool += [(record, reason) for record in sendable]
        else:
            backlog = await self.spool.keys_with_backlog(record.key for record in sendable if record.key)
            behind = [record for record in sendable if record.key in backlog]
            to_spool += [(record, "queued behind spooled records of the same key") for record in behind]
            direct = [record for record in sendable if record.key not in backlog]
            delivered = await self._deliver_with_retries(direct, failures)
            to_spool += delivered.outage
            to_dead_letter += delivered.permanent

        await self._dead_letter(to_dead_letter, to_spool)
        await self._spool(to_spool, failures)
        for record in to_dead_letter:
            # Kept in the DLQ (or in the spool on its way there) for operators; the client must not retry.
            failures.setdefault(
                record.index,
                PublishFailure(
                    FailureCode.RECORD_REJECTED,
                    f"Kafka refused the record: {record.error}",
                    False,
                    dead_lettered=True,
                ),
            )
        spooled = {record.index for record, _ in to_spool}
        return [
            self._result(event, routes[index], failures.get(index), index in spooled)
            for index, event in enumerate(events)
        ]

    def _result(
        self, event: BaseEvent, route: Route, failure: PublishFailure | None, spooled: bool
    ) -> PublishResult:
        if route.unrouted:
            self.metrics.record_unrouted(event.event_type)
            return PublishResult(event.event_id_text, EventStatus.UNROUTED)
        if failure is not None:
            return PublishResult(event.event_id_text, EventStatus.REJECTED, route.topics, failure)
        return PublishResult(
            event.event_id_text, EventStatus.SPOOLED if spooled else EventStatus.ACCEPTED, route.topics
        )

    def _records(
        self, events: Sequence[BaseEvent], routes: Sequence[Route], traceparents: Sequence[str | None]
    ) -> list[OutRecord]:
        records: list[OutRecord] = []
        for index, (event, route, traceparent) in enumerate(zip(events, routes, traceparents, strict=True)):
            if route.unrouted:
                continue
            # Registered types go out as JSON whatever KAFKA_SERIALIZATION says: the protobuf
            # schema knows only the built-in types.
            serializer = self.serializer if event.builtin else self._json
            value = serializer.serialize(event)
            headers = event_headers(event, traceparent, serializer.content_type)
            key = event.kafka_key().encode()
            event_id = event.event_id_text
            fields: dict[str, Any] | None = None  # the event's JSON form, built only for templates
            for destination in route.destinations:
                record_key, record_value, record_headers = key, value, headers
                if destination.key_template or destination.message_template is not None:
                    fields = fields or event.model_dump(mode="json")
                    if destination.key_template:
                        record_key = templates.render(destination.key_template, fields)
                        record_key = str(record_key if record_key is not None else "").encode()
                    if destination.message_template is not None:
                        record_value = orjson.dumps(templates.render(destination.message_template, fields))
                        record_headers = event_headers(event, traceparent, JSON_CONTENT_TYPE)
                records.append(
                    OutRecord(index, event_id, destination.topic, record_key, record_value, record_headers)
                )
        return records

    async def _deliver_with_retries(
        self, records: list[OutRecord], failures: dict[int, PublishFailure]
    ) -> _Delivered:
        """Send records; retry outages with backoff while the deadline allows; sort what is left."""
        result = _Delivered()
        if not records:
            return result
        deadline = time.monotonic() + self._ack_timeout
        pending = records
        try:
            async with self.breaker.guard() as under_breaker:
                while pending:
                    retry_now = await self._send_once(pending, failures, result, deadline)
                    attempt = max((record.attempts for record in retry_now), default=0)
                    wait = self.retry.delay(attempt)
                    out_of_time = time.monotonic() + wait >= deadline
                    gone = self.draining or self.breaker.rejecting()  # shutting down, or Kafka is down
                    if not retry_now or attempt > self.retry.retries or out_of_time or gone:
                        result.outage += [(record, _spool_reason(record)) for record in retry_now]
                        break
                    await asyncio.sleep(wait)
                    if self.draining or self.breaker.rejecting():
                        # Kafka was found down meanwhile: hand the producer nothing more. (A record
                        # queued now would go out with the old producer id when a broker comes back,
                        # and a broker that lost its state may take that id for our next producer.)
                        result.outage += [(record, _spool_reason(record)) for record in retry_now]
                        break
                    for record in retry_now:
                        self.metrics.record_retried(record.topic)
                    pending = retry_now
                # Records lost with a replaced or fenced producer are no evidence of an outage, nor
                # are those given up on during a failover (the cluster is electing leaders).
                evidence = [reason for record, reason in result.outage if not _no_outage_evidence(record)]
                if evidence:
                    under_breaker.failed(evidence[0])  # the records are spooled
        except BrokerUnavailableError:  # raised on entry: nothing was sent
            result.outage = [
                (record, "circuit breaker open") for record in records if record.index not in failures
            ]
        return result

    async def _send_once(
        self,
        records: list[OutRecord],
        failures: dict[int, PublishFailure],
        result: _Delivered,
        deadline: float,
    ) -> list[OutRecord]:
        """One attempt for each record; returns the records worth another attempt (outages)."""
        records = [record for record in records if record.index not in failures]  # event refused: 429
        delivery = self.producer.send([(r.topic, r.value, r.key, r.headers) for r in records])
        cut_short = await wait_for_reports(
            delivery,
            max(0.1, deadline - time.monotonic() + ACK_GRACE_SECONDS),
            self._fault_ack_deadline,
            lambda: self.producer.broker_failed_at,
        )
        reports = sort_reports(delivery, stopped_early=cut_short)
        for record in records:
            record.attempts += 1
        for index in reports.acknowledged:
            records[index].error = None
        count_acknowledged(self.metrics, reports.latencies)
        for index in reports.unreported:  # still in the producer: spooled, never sent again
            record = records[index]
            record.error = DeliveryError(
                record.topic,
                ACK_DEADLINE_PASSED,
                "ACK_DEADLINE",
                "not acknowledged within KAFKA_FAULT_ACK_DEADLINE while a broker is failing "
                "(Kafka may still take this copy too)",
                True,
            )
            self._count_failure(record, record.error)
            result.outage.append((record, _spool_reason(record)))
        for index, full in reports.queue_full:
            failures.setdefault(
                records[index].index,
                PublishFailure(FailureCode.QUEUE_FULL, f"publisher queue is full: {full}", True, 1.0),
            )
            self.metrics.record_rejected("queue_full")
        for index, error in reports.permanent:
            records[index].error = error
            self._count_failure(records[index], error)
            result.permanent.append(records[index])
        retry: list[OutRecord] = []
        for index, error in reports.outage:  # no report in time counts here too (ACK_TIMEOUT)
            records[index].error = error
            self._count_failure(records[index], error)
            retry.append(records[index])
        return retry

    def _count_failure(self, record: OutRecord, error: DeliveryError) -> None:
        self.metrics.record_failed(record.topic, error.name)
        logger.warning(
            "delivery failed",
            extra={
                "event_id": record.event_id,
                "topic": record.topic,
                "reason": str(error),
                "attempt": record.attempts,
            },
        )

    async def _dead_letter(self, records: list[OutRecord], to_spool: list[tuple[OutRecord, str]]) -> None:
        """Write refused records to the DLQ at once; those it cannot take now are spooled for it."""
        if not records:
            return
        if self.breaker.state == "open":
            to_spool += [(r, f"dead-letter topic unavailable; DLQ reason: {r.error}") for r in records]
            return
        sent = [
            dead_letter(self.dlq_topic, r.topic, r.key, r.value, r.headers, str(r.error), r.attempts)
            for r in records
        ]
        delivery = self.producer.send(sent)
        await delivery.wait(self._ack_timeout + ACK_GRACE_SECONDS)
        for index, record in enumerate(records):
            if delivery.error(index) is None:
                self.metrics.record_dlq(record.topic)
                logger.warning(
                    "record dead-lettered",
                    extra={"event_id": record.event_id, "topic": record.topic, "reason": str(record.error)},
                )
            else:
                to_spool.append((record, f"dead-letter topic unavailable; DLQ reason: {record.error}"))

    async def _spool(self, records: list[tuple[OutRecord, str]], failures: dict[int, PublishFailure]) -> None:
        if not records:
            return
        rows = [
            NewRecord(
                event_id=record.event_id,
                topic=record.topic,
                key=record.key,
                value=record.value,
                headers=record.headers,
                reason=reason,
                dlq_reason=str(record.error)
                if record.error is not None and not record.error.retriable
                else None,
            )
            for record, reason in records
        ]
        try:
            await self.spool.add(rows)
        except SpoolFullError as exc:
            self._fail_all(records, failures, PublishFailure(FailureCode.SPOOL_FULL, str(exc), True, 5.0))
        except Exception as exc:  # a database outage must become a 503, never a lost event
            logger.exception("spool write failed")
            failure = PublishFailure(
                FailureCode.SPOOL_UNAVAILABLE, f"Kafka and the spool are unavailable: {exc}", True, 5.0
            )
            self._fail_all(records, failures, failure)
        else:
            # One line per request, not per record: in an outage every event comes through here.
            logger.info(
                "records spooled",
                extra={
                    "records": len(records),
                    "event_ids": [record.event_id for record, _ in records],
                    "topics": sorted({record.topic for record, _ in records}),
                    "reason": records[0][1],
                },
            )

    def _fail_all(
        self,
        records: Iterable[tuple[OutRecord, str]],
        failures: dict[int, PublishFailure],
        failure: PublishFailure,
    ) -> None:
        indexes = {record.index for record, _ in records}
        for index in indexes:
            failures[index] = failure
        self.metrics.record_rejected(failure.code.value, len(indexes))


@dataclass(slots=True)
class _Delivered:
    """Records of one delivery that were not acknowledged, by what to do with them."""

    outage: list[tuple[OutRecord, str]] = field(default_factory=list)
    permanent: list[OutRecord] = field(default_factory=list)


async def wait_for_reports(
    delivery: Delivery, seconds: float, fault_deadline: float, broker_failed_at: Callable[[], float]
) -> bool:
    """Wait up to `seconds` for a delivery's reports; True when given up on early: `fault_deadline`
    has passed (0: never) and a broker connection failed lately (`broker_failed_at`, monotonic).

    A leader lost with its broker is re-elected only once the cluster notices (Kafka's
    broker.session.timeout.ms, 9 s by default); until then its partitions' records wait in the
    producer. Their requests spool them instead and answer; the producer may deliver them as
    well, which is a duplicate with the same event id after a fault.
    """
    step = fault_deadline
    if step <= 0:
        await delivery.wait(seconds)
        return False
    end = time.monotonic() + seconds
    since = time.monotonic() - RECENT_BROKER_FAILURE_SECONDS
    while True:
        remaining = end - time.monotonic()
        if remaining <= step:
            await delivery.wait(remaining)
            return False
        if await delivery.wait(step, final=False):
            return False
        if broker_failed_at() >= since:
            return True
        step = FAULT_CHECK_SECONDS


def _no_outage_evidence(record: OutRecord) -> bool:
    return record.error is not None and (record.error.producer_lost or record.error.deadline_passed)


def _spool_reason(record: OutRecord) -> str:
    return f"not acknowledged after {record.attempts} attempt(s): {record.error}"
