"""What only a real Apache Kafka cluster of three brokers can show (the development broker gets
these wrong). NOT_ENOUGH_REPLICAS answered as an outage is in test_kafka_cluster_faults.py (two of
three brokers killed): Apache Kafka 4 acknowledged acks=all writes to a topic whose
min.insync.replicas (4) exceeded its replication factor (3), so that setting cannot provoke it.

Run by `make test-kafka` on a three-node cluster it starts for this module, or on the cluster
KAFKA_BROKERS names when KAFKA_REAL_CLUSTER=1 (at least three brokers, e.g. docker-compose.yml's:
`KAFKA_REAL_CLUSTER=1 KAFKA_BROKERS=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094 make test-kafka`).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from app.factory import create_app
from tests.conftest import SettingsFactory, running
from tests.kafka_helpers import create_topics
from tests.services import brokers
from tests.services.apache_kafka import KafkaCluster

EXTERNAL = os.environ.get("KAFKA_REAL_CLUSTER") == "1" and bool(os.environ.get("KAFKA_BROKERS"))

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        brokers.is_tansu() and not EXTERNAL,
        reason="needs Apache Kafka with three brokers (make test-kafka)",
    ),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap of a three-broker cluster: KAFKA_BROKERS's, or one started for this module."""
    if EXTERNAL:
        yield os.environ["KAFKA_BROKERS"]
        return
    with KafkaCluster(tmp_path_factory.mktemp("cluster") / "kafka", size=3) as nodes:
        yield nodes.bootstrap


async def test_topics_are_created_replicated_three_times(
    make_settings: SettingsFactory, cluster: str
) -> None:
    settings = make_settings(
        kafka_brokers=cluster, kafka_topic_replication_factor=3, kafka_topic_partitions=3
    )
    async with running(create_app(settings)) as client:
        deadline = time.monotonic() + 30
        report: dict[str, object] = {}
        while time.monotonic() < deadline:
            report = (await client.get(f"/admin/topics/{settings.kafka_topic_attempts}")).json()
            if report.get("exists"):
                break
            await asyncio.sleep(0.5)
    assert report["replication_factor"] == 3
    assert report["mismatches"] == []


async def test_lag_agrees_with_list_offsets(make_settings: SettingsFactory, cluster: str) -> None:
    settings = make_settings(kafka_brokers=cluster)
    topic = f"lag.{uuid.uuid4().hex[:8]}"
    create_topics(cluster, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": settings.kafka_brokers})
    for _ in range(25):
        producer.produce(topic, value=b"x", partition=0)
    producer.flush(30)
    group = f"readers-{uuid.uuid4().hex[:6]}"
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_brokers, "group.id": group, "enable.auto.commit": False}
    )
    consumer.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
    _, high = consumer.get_watermark_offsets(
        TopicPartition(topic, 0), timeout=10
    )  # ListOffsets: right on Kafka
    consumer.close()
    async with running(create_app(settings)) as client:
        lag = (await client.get(f"/admin/consumer-groups/{group}/lag")).json()
    assert high == 25
    assert lag["lag"] == high - 7
