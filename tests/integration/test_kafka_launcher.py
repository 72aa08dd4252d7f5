"""The tests' Apache Kafka launcher leaves no JVM behind when a cluster fails to come up.

Apache Kafka only (`make test-kafka`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.services import brokers
from tests.services.apache_kafka import KafkaCluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(brokers.is_tansu(), reason="needs Apache Kafka (make test-kafka)"),
]


def test_nodes_of_a_cluster_that_fails_to_start_are_stopped(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path / "kafka", size=1)
    with pytest.raises(RuntimeError, match="not ready within"):
        cluster.start(timeout=0.0)  # no JVM answers metadata at once
    node = cluster.node(1)
    assert node.pid is None  # stopped, by PID, before start() gave up
    assert node.process is None
