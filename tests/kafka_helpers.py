"""Test helpers that talk to the broker: read back what the service wrote."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tests.services import brokers


@dataclass(frozen=True)
class Record:
    """One record read back from Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    timestamp_ms: int


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[Record]:
    """Read `topic` from the beginning: at least `expected` records, and on to the end of every
    partition, or until `timeout` passed.

    Reading on to the end matters after a fault: duplicates are then allowed, and stopping at
    `expected` records would leave as many distinct events unread as there were duplicates.
    Partitions are assigned directly: a consumer-group join is slow on the development broker
    (docs/brokers.md), and these tests only need to read.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    records: list[Record] = []
    try:
        deadline = time.monotonic() + timeout
        partitions: list[int] = []
        while not partitions and time.monotonic() < deadline:
            metadata = consumer.list_topics(topic, timeout=5)
            described = metadata.topics.get(topic)
            if described is not None and described.error is None:
                partitions = sorted(described.partitions)
            else:
                time.sleep(0.2)
        assigned = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        consumer.assign(assigned)
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                records.append(_record(message, topic))
            elif message is None and len(records) >= expected and _at_end(consumer, assigned):
                break
    finally:
        consumer.close()
    return records


def _at_end(consumer: Consumer, assigned: list[TopicPartition]) -> bool:
    """Every partition read up to its high watermark: from ListOffsets on Apache Kafka; as the last
    fetch reported it on the development broker, whose ListOffsets answer is wrong."""
    cached = brokers.is_tansu()
    for position in consumer.position(assigned):
        low, high = consumer.get_watermark_offsets(position, timeout=5, cached=cached)
        if high < 0:  # not fetched yet
            return False
        if (position.offset if position.offset >= 0 else max(low, 0)) < high:
            return False
    return True


def _record(message: Message, topic: str) -> Record:
    value = message.value()
    key = message.key()
    return Record(
        topic=message.topic() or topic,
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=key.encode() if isinstance(key, str) else key,
        value=value.encode() if isinstance(value, str) else value or b"",
        headers={name: _bytes(item) for name, item in _header_pairs(message)},
        timestamp_ms=message.timestamp()[1],
    )


def _header_pairs(message: Message) -> list[tuple[str, bytes | str | None]]:
    headers = message.headers() or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def _bytes(value: bytes | str | None) -> bytes:
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


def create_topics(bootstrap: str, topics: list[str], partitions: int = 4) -> None:
    """Create topics a test writes to before the service would (Apache Kafka here does not create
    topics on produce; the development broker does, and then this changes nothing)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    replication = min(3, len(admin.list_topics(timeout=10).brokers))
    futures = admin.create_topics([NewTopic(topic, partitions, replication) for topic in topics])
    for future in futures.values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
