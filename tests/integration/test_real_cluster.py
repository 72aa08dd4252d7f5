"""What only a real Apache Kafka cluster of three brokers can show (the development broker gets
these wrong).

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
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)
from confluent_kafka.cimpl import NewTopic

from app.factory import create_app
from tests.conftest import SettingsFactory, activity_event, running
from tests.kafka_helpers import create_topics, read_topic
from tests.services import brokers
from tests.services.apache_kafka import KafkaCluster
from tests.traffic import wait_until_spool_empty

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


async def test_not_enough_replicas_is_an_outage_spooled_then_delivered(
    make_settings: SettingsFactory, cluster: str
) -> None:
    settings = make_settings(kafka_brokers=cluster, kafka_producer_timeout="3s", spool_relay_interval="500ms")
    topic = settings.kafka_topic_activities
    admin = AdminClient({"bootstrap.servers": settings.kafka_brokers})
    # min.insync.replicas above the replication factor: every acks=all write is refused with
    # NOT_ENOUGH_REPLICAS, as when brokers are down, without stopping any.
    created = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=3, config={"min.insync.replicas": "4"})]
    )
    next(iter(created.values())).result(timeout=30)
    async with running(create_app(settings)) as client:
        answer = await client.post("/v1/events/activities", json=activity_event())
        assert answer.status_code == 202
        assert answer.json()["status"] == "spooled"
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry("min.insync.replicas", "2", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        next(iter(admin.incremental_alter_configs([resource]).values())).result(timeout=30)
        metrics = await wait_until_spool_empty(client, within=60)
    assert metrics["spool"]["depth"] == 0
    (record,) = read_topic(settings.kafka_brokers, topic, expected=1)
    assert record.headers["event_id"].decode() == answer.json()["event_id"]


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
