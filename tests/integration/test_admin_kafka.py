"""Topic creation and inspection at start, and consumer lag, against the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from app.factory import create_app
from app.publishing.topic_admin import KafkaAdmin
from tests.conftest import SettingsFactory, running
from tests.kafka_helpers import create_topics
from tests.services.brokers import Broker

pytestmark = pytest.mark.integration


async def test_topics_are_created_at_start_and_a_mismatch_is_reported(
    make_settings: SettingsFactory, dev_broker: Broker
) -> None:
    settings = make_settings(kafka_brokers=dev_broker.bootstrap, kafka_topic_partitions=3)
    admin = AdminClient({"bootstrap.servers": dev_broker.bootstrap})
    created = admin.create_topics(
        [
            NewTopic(settings.kafka_topic_activities, num_partitions=2, replication_factor=1),
            NewTopic(settings.kafka_topic_sessions, num_partitions=3, replication_factor=1,
                     config={"retention.ms": "3600000"}),
        ]
    )  # fmt: skip
    for future in created.values():
        future.result(timeout=10)

    async with running(create_app(settings)) as client:
        deadline = time.monotonic() + 20
        topics: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            topics = {item["name"]: item for item in (await client.get("/admin/topics")).json()["topics"]}
            if all(item["exists"] for item in topics.values()):
                break
            await asyncio.sleep(0.3)
        one = await client.get(f"/admin/topics/{settings.kafka_topic_attempts}")
        missing = await client.get("/admin/topics/no.such.topic")

    assert set(topics) == {*settings.configured_topics, settings.kafka_topic_dlq}
    assert topics[settings.kafka_topic_attempts]["partitions"] == 3
    assert topics[settings.kafka_topic_attempts]["mismatches"] == []
    assert topics[settings.kafka_topic_dlq]["partitions"] == 3
    assert topics[settings.kafka_topic_activities]["partitions"] == 2  # left as it was
    assert topics[settings.kafka_topic_activities]["mismatches"] == ["2 partitions, configured 3"]
    # Retention: each topic's own (the DLQ keeps its records longer), checked like partitions, never changed.
    week, month = str(7 * 24 * 3600 * 1000), str(30 * 24 * 3600 * 1000)
    assert topics[settings.kafka_topic_attempts]["config"]["retention.ms"] == week
    assert topics[settings.kafka_topic_dlq]["config"]["retention.ms"] == month
    assert topics[settings.kafka_topic_sessions]["config"]["retention.ms"] == "3600000"
    assert topics[settings.kafka_topic_sessions]["mismatches"] == [f"retention.ms 3600000, configured {week}"]
    assert one.json()["messages"] == 0
    assert missing.status_code == 404


async def test_consumer_group_lag(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    topic = f"lag.{uuid.uuid4().hex[:8]}"
    create_topics(settings.kafka_brokers, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": settings.kafka_brokers})
    for _ in range(10):
        producer.produce(topic, value=b"x", key=b"k", partition=0)
    producer.flush(10)
    group = f"readers-{uuid.uuid4().hex[:6]}"
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_brokers, "group.id": group, "enable.auto.commit": False}
    )
    consumer.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    consumer.close()

    async with running(create_app(settings)) as client:
        lag = (await client.get(f"/admin/consumer-groups/{group}/lag")).json()

    assert lag["lag"] == 6
    assert lag["partitions"] == [{"topic": topic, "partition": 0, "committed": 4, "latest": 10, "lag": 6}]


def test_watermarks_after_retention_removed_the_first_records(make_settings: SettingsFactory) -> None:
    """The watermark reader starts at offset 0; where retention removed it, the marks are still right."""
    settings = make_settings()
    topic = f"marks.{uuid.uuid4().hex[:8]}"
    create_topics(settings.kafka_brokers, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": settings.kafka_brokers})
    for _ in range(10):
        producer.produce(topic, value=b"x", partition=0)
    producer.flush(10)
    admin = AdminClient({"bootstrap.servers": settings.kafka_brokers})
    try:
        deleted = admin.delete_records([TopicPartition(topic, 0, 4)], request_timeout=10)
        next(iter(deleted.values())).result(timeout=10)
    except Exception as error:  # the development broker has no DeleteRecords
        pytest.skip(f"the broker cannot delete records: {error}")

    assert KafkaAdmin({"bootstrap.servers": settings.kafka_brokers}).offsets(topic, [0]) == {0: (4, 10)}
