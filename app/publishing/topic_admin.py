"""Creating the topics the service needs, through Kafka's admin API."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

logger = logging.getLogger(__name__)


def ensure_topics(
    bootstrap: str, topics: Iterable[str], partitions: int, replication_factor: int = 1, timeout: float = 15.0
) -> list[str]:
    """Create each missing topic; returns the names created. Existing topics are left as they are."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [topic for topic in dict.fromkeys(topics) if topic not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor)
            for topic in missing
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    logger.info("topics created", extra={"topics": created, "partitions": partitions})
    return created
