"""Topic reports with a fake at the admin-client boundary: what the development broker cannot show.

The development broker has a single node (replication factor 1 always) and returns only explicitly
set configs; a real cluster's under-replicated topic is simulated here.
"""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

from app.publishing.topic_admin import KafkaAdmin


class FakeAdminClient:
    def __init__(self, partitions: int, replicas: int) -> None:
        self.partitions = partitions
        self.replicas = replicas

    def list_topics(self, timeout: float) -> Any:
        partition = SimpleNamespace(replicas=list(range(self.replicas)))
        topic = SimpleNamespace(error=None, partitions={p: partition for p in range(self.partitions)})
        return SimpleNamespace(topics={"user.attempts": topic})

    def describe_configs(self, resources: list[Any]) -> dict[Any, Future[Any]]:
        future: Future[Any] = Future()
        future.set_result({"retention.ms": SimpleNamespace(value="604800000")})
        return {resource: future for resource in resources}


def _admin(partitions: int, replicas: int) -> KafkaAdmin:
    admin = KafkaAdmin({"bootstrap.servers": "127.0.0.1:1"})
    admin.client = FakeAdminClient(partitions, replicas)  # type: ignore[assignment]
    admin.offsets_many = lambda wanted: {  # type: ignore[method-assign,assignment]
        topic: {p: (0, 10) for p in partitions} for topic, partitions in wanted.items()
    }
    return admin


def test_under_replicated_topic_is_reported() -> None:
    report = _admin(partitions=6, replicas=2).describe(
        "user.attempts", expected_partitions=6, expected_replication=3
    )

    assert report.mismatches == ["replication factor 2, configured 3"]
    assert report.messages == 60
    assert report.config == {"retention.ms": "604800000"}


def test_matching_topic_has_no_mismatch_and_a_missing_one_says_so() -> None:
    admin = _admin(partitions=6, replicas=3)
    assert admin.describe("user.attempts", 6, 3).mismatches == []
    missing = admin.describe("other.topic", 6, 3)
    assert (missing.exists, missing.mismatches) == (False, ["topic does not exist"])
