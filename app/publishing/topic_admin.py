"""Kafka's admin API as the service uses it: create missing topics, describe them, consumer lag.

Synchronous (confluent-kafka's AdminClient answers with concurrent futures): callers on the event
loop use asyncio.to_thread.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]
from confluent_kafka.cimpl import NewTopic

logger = logging.getLogger(__name__)


@dataclass
class TopicReport:
    """What the cluster says about one topic, and how it differs from what we configured."""

    name: str
    exists: bool
    partitions: int = 0
    replication_factor: int = 0
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (earliest, latest)
    config: dict[str, str] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return sum(latest - earliest for earliest, latest in self.offsets.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exists": self.exists,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "messages": self.messages,
            "offsets": {
                str(p): {"earliest": lo, "latest": hi} for p, (lo, hi) in sorted(self.offsets.items())
            },
            "config": self.config,
            "mismatches": self.mismatches,
        }


class KafkaAdmin:
    """Topic creation and inspection against one cluster."""

    def __init__(self, config: dict[str, Any], timeout: float = 10.0) -> None:
        self.connection: dict[str, Any] = {
            key: value
            for key, value in config.items()
            if key.startswith(("bootstrap.", "security.", "sasl.", "ssl."))
        }
        # librdkafka's own log lines go through Python logging instead of raw stderr.
        admin_config: dict[str, Any] = {**self.connection, "logger": logging.getLogger("librdkafka")}
        self.client = AdminClient(admin_config)
        self.timeout = timeout

    def ensure_topics(
        self, topics: Iterable[str], partitions: int, replication_factor: int, config: dict[str, str]
    ) -> list[str]:
        """Create each missing topic; existing ones are never changed. Returns the names created."""
        missing = self.missing(topics)
        if not missing:
            return []
        futures = self.client.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor, config=config)
             for topic in missing],
            operation_timeout=self.timeout,
            request_timeout=self.timeout,
        )  # fmt: skip
        created = []
        for topic, future in futures.items():
            try:
                future.result(timeout=self.timeout)
                created.append(topic)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        logger.info("topics created", extra={"topics": created, "partitions": partitions})
        return created

    def missing(self, topics: Iterable[str]) -> list[str]:
        """The topics the cluster does not have (asking for all topics: see `describe`)."""
        existing = set(self.client.list_topics(timeout=self.timeout).topics)
        return [topic for topic in dict.fromkeys(topics) if topic not in existing]

    def describe(
        self,
        topic: str,
        expected_partitions: int,
        expected_replication: int,
        expected_retention_ms: int | None = None,
    ) -> TopicReport:
        return self.describe_many({topic: expected_retention_ms}, expected_partitions, expected_replication)[
            0
        ]

    def describe_many(
        self,
        topics: dict[str, int | None],
        expected_partitions: int,
        expected_replication: int,
    ) -> list[TopicReport]:
        """Each topic (with the retention we expect of it, if any) as the cluster describes it: one
        metadata request, one consumer for every partition's watermarks, one DescribeConfigs."""
        # Ask for all topics: a metadata request naming a missing topic makes some brokers create it.
        cluster = self.client.list_topics(timeout=self.timeout).topics
        reports: list[TopicReport] = []
        partitions_of: dict[str, list[int]] = {}
        for topic in topics:
            metadata = cluster.get(topic)
            if metadata is None or metadata.error is not None:
                reports.append(TopicReport(topic, exists=False, mismatches=["topic does not exist"]))
                continue
            partitions_of[topic] = sorted(metadata.partitions)
            replication = min((len(p.replicas) for p in metadata.partitions.values()), default=0)
            reports.append(
                TopicReport(
                    topic, exists=True, partitions=len(partitions_of[topic]), replication_factor=replication
                )
            )
        offsets = self.offsets_many(partitions_of)
        configs = self.configs_of(list(partitions_of))
        for report in reports:
            if not report.exists:
                continue
            report.offsets = offsets[report.name]
            report.config = configs.get(report.name, {})
            if report.partitions != expected_partitions:
                report.mismatches.append(f"{report.partitions} partitions, configured {expected_partitions}")
            if report.replication_factor < expected_replication:
                report.mismatches.append(
                    f"replication factor {report.replication_factor}, configured {expected_replication}"
                )
            retention, expected_retention_ms = report.config.get("retention.ms"), topics[report.name]
            if (
                expected_retention_ms is not None
                and retention is not None
                and int(retention) != expected_retention_ms
            ):
                report.mismatches.append(f"retention.ms {retention}, configured {expected_retention_ms}")
        return reports

    def offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, tuple[int, int]]:
        """Earliest and latest offset of each partition of `topic`."""
        return self.offsets_many({topic: list(partitions)})[topic]

    def offsets_many(self, partitions_of: dict[str, list[int]]) -> dict[str, dict[int, tuple[int, int]]]:
        """Earliest and latest offset of each partition of each topic, with one consumer.

        Read from the watermarks a Fetch response carries, not from ListOffsets: the development
        broker answers ListOffsets with the last batch's base offset + 1 (docs/brokers.md), while
        the high mark of a Fetch is right on it and on Apache Kafka alike. The consumer starts at
        the absolute offset 0, not at a logical end: a logical offset must first be resolved, and
        librdkafka, which does not know the partitions' leaders yet right after `assign`, retries
        that on a fixed 500 ms timer (most of what this took). Where retention has removed offset 0
        the fetch is out of range and the consumer resets to the end: slower, still right.
        """
        wanted = [TopicPartition(topic, p) for topic, partitions in partitions_of.items() for p in partitions]
        result: dict[str, dict[int, tuple[int, int]]] = {topic: {} for topic in partitions_of}
        if not wanted:
            return result
        consumer = Consumer(
            {
                **self.connection,
                "logger": logging.getLogger("librdkafka"),
                "group.id": f"event-ingest-watermarks-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,  # an empty fetch at the end should come back at once
                "max.partition.fetch.bytes": 1,  # only the marks are wanted: one batch per partition
                "auto.offset.reset": "latest",
            }
        )
        try:
            consumer.assign([TopicPartition(tp.topic, tp.partition, 0) for tp in wanted])
            missing = list(wanted)
            deadline = time.monotonic() + self.timeout
            while missing and time.monotonic() < deadline:
                consumer.poll(0.05)  # a fetch: its response caches the partitions' watermarks
                still = []
                for tp in missing:
                    low, high = consumer.get_watermark_offsets(tp, cached=True)
                    if low >= 0 and high >= 0:
                        result[tp.topic][tp.partition] = (low, high)
                    else:
                        still.append(tp)
                missing = still
            if missing:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "no watermarks in time"))
            return result
        finally:
            consumer.close()

    def config_of(self, topic: str) -> dict[str, str]:
        return self.configs_of([topic]).get(topic, {})

    def configs_of(self, topics: list[str]) -> dict[str, dict[str, str]]:
        """Each topic's configuration as the cluster reports it (a topic it would not describe: left out)."""
        if not topics:
            return {}
        futures = self.client.describe_configs(
            [ConfigResource(ResourceType.TOPIC, topic) for topic in topics]
        )
        configs: dict[str, dict[str, str]] = {}
        for resource, future in futures.items():
            try:
                entries = future.result(timeout=self.timeout)
            except KafkaException:
                continue
            configs[resource.name] = {
                name: str(entry.value) for name, entry in entries.items() if entry.value is not None
            }
        return configs

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        """A consumer group's committed offsets, by (topic, partition)."""
        futures = self.client.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
        answer = next(iter(futures.values())).result(timeout=self.timeout)
        return {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions if tp.offset >= 0}
