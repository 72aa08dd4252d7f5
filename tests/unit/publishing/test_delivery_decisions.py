"""The delivery core's decisions, with a scripted producer behind the RecordSender protocol: what the
request path retries, spools, dead-letters or refuses, and what the relay deletes, releases or
redirects. (The same paths run against real brokers in tests/integration.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from confluent_kafka import KafkaError
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.config.settings import load_settings
from app.database.engine import create_database_engine
from app.database.schema import SpooledRecord
from app.observability.publisher_metrics import PublisherMetrics
from app.publishing.breaker import DeliveryBreaker
from app.publishing.delivery import ProducedRecord, sort_reports
from app.publishing.errors import DeliveryError, QueueFullError
from app.publishing.pause import PauseSwitch
from app.publishing.producer import Delivery
from app.publishing.publisher import EventPublisher
from app.publishing.retry import RetryPolicy
from app.routing.router import Router
from app.routing.rules import default_rules
from app.serialization.codecs import serializer_for
from app.spool.relay import SpoolRelay
from app.spool.service import Spool
from app.spool.store import SpoolStore
from event_models.models import ActivityEvent
from event_models.outcomes import EventStatus, FailureCode
from tests.conftest import activity_event

Outcome = float | DeliveryError | QueueFullError | None  # None: no report (a timeout)
SETTINGS = load_settings(_env_file=None)
DLQ = SETTINGS.kafka_topic_dlq


def _kafka_error(topic: str, code: int, name: str, retriable: bool) -> DeliveryError:
    return DeliveryError(topic, code, name, name.lower(), retriable)


def outage(topic: str) -> DeliveryError:
    return _kafka_error(topic, KafkaError._MSG_TIMED_OUT, "_MSG_TIMED_OUT", True)


def too_large(topic: str) -> DeliveryError:
    return _kafka_error(topic, KafkaError.MSG_SIZE_TOO_LARGE, "MSG_SIZE_TOO_LARGE", False)


def fenced(topic: str) -> DeliveryError:
    return _kafka_error(topic, KafkaError._FENCED, "_FENCED", True)


class ScriptedProducer:
    """Answers each `send` from the next script: topic -> outcome (default: acknowledged)."""

    broker_failed_at = -1e9

    def __init__(self, *scripts: Callable[[str], Outcome]) -> None:
        self.scripts = list(scripts)
        self.sent: list[list[ProducedRecord]] = []

    def send(self, records: Sequence[ProducedRecord]) -> Delivery:
        loop = asyncio.get_running_loop()
        delivery = Delivery(loop, [topic for topic, _, _, _ in records], _finish, lambda reason: None)
        script = self.scripts.pop(0) if self.scripts else (lambda topic: 0.001)
        for index, (topic, _, _, _) in enumerate(records):
            outcome = script(topic)
            if outcome is not None:
                delivery.settle(index, outcome)
        self.sent.append(list(records))
        return delivery


def _finish(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_database_engine(sqlite_url)
    yield engine
    engine.dispose()


class Parts:
    def __init__(self, engine: Engine, producer: ScriptedProducer, breaker_threshold: int = 5) -> None:
        self.metrics = PublisherMetrics(CollectorRegistry(), 300)
        self.breaker = DeliveryBreaker(breaker_threshold, timedelta(seconds=60))
        self.spool = Spool(SpoolStore(engine, 1000))
        self.retry = RetryPolicy(retries=2, initial_delay=0.001, max_delay=0.005, factor=2, jitter=0)
        self.producer = producer
        self.publisher = EventPublisher(
            producer,
            Router(default_rules(SETTINGS)),
            serializer_for("json"),
            self.metrics,
            self.breaker,
            self.spool,
            self.retry,
            PauseSwitch(engine),
            ack_timeout=0.3,
            dlq_topic=DLQ,
            max_record_bytes=1_000_000,
            max_in_flight=1000,
        )

    def relay(self, engine: Engine) -> SpoolRelay:
        return SpoolRelay(self.spool, self.producer, self.breaker, self.metrics, self.retry,
                          dlq_topic=DLQ, interval=60, batch_size=100, lease=timedelta(seconds=30),
                          max_age=timedelta(days=1), max_attempts=5, ack_timeout=0.3,
                          pause=PauseSwitch(engine))  # fmt: skip


def _event(**fields: Any) -> ActivityEvent:
    return ActivityEvent.model_validate(activity_event(**fields))


async def test_acknowledged_records_are_accepted_and_counted(engine: Engine) -> None:
    parts = Parts(engine, ScriptedProducer())
    (result,) = await parts.publisher.publish_many([_event()])
    assert result.outcome is EventStatus.ACCEPTED
    assert parts.metrics.events_published == 1
    assert [topic for topic, *_ in parts.producer.sent[0]] == [SETTINGS.kafka_topic_activities]


async def test_an_outage_is_retried_and_then_accepted(engine: Engine) -> None:
    parts = Parts(engine, ScriptedProducer(outage))
    (result,) = await parts.publisher.publish_many([_event()])
    assert result.outcome is EventStatus.ACCEPTED
    assert len(parts.producer.sent) == 2
    assert (parts.metrics.events_retried, parts.metrics.events_failed) == (1, 1)


async def test_a_lasting_outage_is_spooled_and_counted_against_the_breaker(engine: Engine) -> None:
    parts = Parts(engine, ScriptedProducer(*[outage] * 10), breaker_threshold=1)
    (result,) = await parts.publisher.publish_many([_event()])
    assert result.outcome is EventStatus.SPOOLED
    assert len(parts.producer.sent) == 3  # the first attempt and RetryPolicy.retries more
    assert parts.breaker.state == "open"
    assert (await parts.spool.refresh()).depth == 1


async def test_records_lost_with_their_producer_are_spooled_without_opening_the_breaker(
    engine: Engine,
) -> None:
    parts = Parts(engine, ScriptedProducer(*[fenced] * 10), breaker_threshold=1)
    (result,) = await parts.publisher.publish_many([_event()])
    assert result.outcome is EventStatus.SPOOLED
    assert parts.breaker.state == "closed"  # the producer was gone, not the cluster


async def test_a_record_kafka_refuses_is_dead_lettered_and_the_event_rejected(engine: Engine) -> None:
    parts = Parts(engine, ScriptedProducer(too_large))
    (result,) = await parts.publisher.publish_many([_event()])
    assert result.outcome is EventStatus.REJECTED
    assert result.failure is not None
    assert (result.failure.code, result.failure.retriable, result.failure.dead_lettered) == (
        FailureCode.RECORD_REJECTED, False, True,
    )  # fmt: skip
    dlq_topic, _, _, headers = parts.producer.sent[1][0]
    assert dlq_topic == DLQ
    assert dict(headers)["original_topic"] == SETTINGS.kafka_topic_activities
    assert dict(headers)["dlq_reason"].startswith("MSG_SIZE_TOO_LARGE")
    assert parts.metrics.events_dlq == 1


async def test_a_full_producer_queue_is_refused_as_retriable_backpressure(engine: Engine) -> None:
    parts = Parts(engine, ScriptedProducer(lambda topic: QueueFullError("queue full")))
    (result,) = await parts.publisher.publish_many([_event()])
    assert result.outcome is EventStatus.REJECTED
    assert result.failure is not None
    assert (result.failure.code, result.failure.retriable) == (FailureCode.QUEUE_FULL, True)
    assert (await parts.spool.refresh()).depth == 0  # refused, not taken


async def test_the_relay_deletes_delivered_rows_releases_outages_and_redirects_refused_records(
    engine: Engine,
) -> None:
    parts = Parts(engine, ScriptedProducer(*[outage] * 3))
    results = await parts.publisher.publish_many(
        [_event(user_id="a"), _event(user_id="b"), _event(user_id="c")]
    )
    assert [result.outcome for result in results] == [EventStatus.SPOOLED] * 3
    parts.breaker.allow_trial()
    relay = parts.relay(engine)
    answers: dict[bytes, Callable[[str], Outcome]] = {
        b"a": lambda topic: 0.001,
        b"b": outage,
        b"c": too_large,
    }
    keys = iter([b"a", b"b", b"c"])  # the relay sends the rows in spool order, in one delivery
    parts.producer.scripts = [lambda topic: answers[next(keys)](topic)]

    delivered = await relay.drain_once()

    assert delivered == 1
    assert parts.metrics.events_relayed == 1
    with Session(engine) as session:
        rows = {row.key: row for row in session.scalars(select(SpooledRecord))}
    assert set(rows) == {b"b", b"c"}  # a: acknowledged, deleted
    assert (rows[b"b"].attempts, rows[b"b"].dlq_reason) == (1, None)  # released for a later round
    assert rows[b"c"].dlq_reason is not None  # refused by Kafka: bound for the dead-letter topic
    assert rows[b"c"].dlq_reason.startswith("MSG_SIZE_TOO_LARGE")


def test_sort_reports_keeps_unreported_records_apart_only_when_asked() -> None:
    async def sort() -> tuple[Any, Any]:
        delivery = Delivery(asyncio.get_running_loop(), ["t", "t", "t"], _finish, lambda reason: None)
        delivery.settle(0, 0.002)
        delivery.settle(1, too_large("t"))
        return sort_reports(delivery, stopped_early=True), sort_reports(delivery)

    early, final = asyncio.run(sort())
    assert (early.acknowledged, early.unreported, [i for i, _ in early.permanent]) == ([0], [2], [1])
    assert early.latencies == {"t": [0.002]}
    assert final.unreported == []
    assert [(index, error.name) for index, error in final.outage] == [(2, "ACK_TIMEOUT")]
