"""Faults on a three-node Apache Kafka cluster (replication factor 3, min.insync.replicas 2), each
with a client posting single events and batches throughout; every event answered 2xx is counted at
the other end by event_id, in per-user order. Figures print as `[cluster] ...`.

Apache Kafka only (`make test-kafka`): the development broker has a single node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.factory import create_app
from tests.conftest import SettingsFactory, running
from tests.kafka_helpers import read_topic
from tests.services import brokers
from tests.services.apache_kafka import KafkaCluster
from tests.traffic import Poster, Traffic, check_arrival, wait_until_spool_empty

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(brokers.is_tansu(), reason="needs Apache Kafka (make test-kafka): three nodes"),
]

SINGLE_USERS = [f"single-{n}" for n in range(6)]
BATCH_USERS = [f"batch-{n}" for n in range(3)]


# A fault gets the topic being written and returns when it started and ended (time.monotonic()).
Fault = Callable[[str], Awaitable[tuple[float, float]]]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    nodes = KafkaCluster(tmp_path / "kafka", size=3)
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


def _merge(*traffics: Traffic) -> Traffic:
    merged = Traffic()
    for traffic in traffics:
        merged.accepted.update(traffic.accepted)
        merged.refused += traffic.refused
        merged.latencies += traffic.latencies
        merged.spooled += traffic.spooled
        merged.missing_retry_after += traffic.missing_retry_after
        for status, count in traffic.statuses.items():
            merged.statuses[status] += count
    return merged


async def _fault_under_load(
    make_settings: SettingsFactory,
    cluster: KafkaCluster,
    database_url: str,
    name: str,
    fault: Fault,
) -> None:
    """Post singles and batches, run `fault(topic)` (an async callable returning the fault's
    start and end times), keep posting a little, then count everything at the other end."""
    settings = make_settings(
        kafka_brokers=cluster.bootstrap,
        database_url=database_url,
        kafka_topic_partitions=3,
        kafka_topic_replication_factor=3,
    )
    topic = settings.kafka_topic_activities
    async with running(create_app(settings)) as client:
        await _wait_for_topic(client, topic)
        singles = Poster(client, SINGLE_USERS, pause=0.01)
        batches = Poster(client, BATCH_USERS, pause=0.05, batch=20)
        singles.start()
        batches.start()
        await asyncio.sleep(2.0)
        started, ended = await fault(topic)
        await asyncio.sleep(3.0)
        traffic = _merge(await singles.stop(), await batches.stop())
        metrics = await wait_until_spool_empty(client, within=90)
    assert metrics["spool"]["depth"] == 0
    records = read_topic(cluster.bootstrap, topic, expected=len(traffic.accepted), timeout=90)
    arrival = check_arrival(traffic.accepted, records)
    during = traffic.latency_percentile(0.99, since=started, until=ended + 1.0)
    five_xx = sum(count for status, count in traffic.statuses.items() if status.startswith("5"))
    print(
        f"\n[cluster] fault={name} accepted={len(traffic.accepted)} spooled={traffic.spooled} "
        f"lost={len(arrival.missing)} duplicates={arrival.duplicates} 5xx={five_xx} "
        f"refused={len(traffic.refused)} p99_during_fault={during:.2f}s "
        f"p99_overall={traffic.latency_percentile(0.99):.2f}s fault_seconds={ended - started:.1f} "
        f"producer_restarts={metrics.get('producer_restarts')}"
    )
    assert arrival.missing == set()
    assert arrival.order_violations == []
    assert five_xx == 0, dict(traffic.statuses)
    assert traffic.missing_retry_after == 0


async def _wait_for_topic(client: httpx.AsyncClient, topic: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (await client.get(f"/admin/topics/{topic}")).json().get("exists"):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"topic {topic} was not created")


async def test_leader_killed_under_load(
    make_settings: SettingsFactory, cluster: KafkaCluster, sqlite_url: str
) -> None:
    async def kill_leader(topic: str) -> tuple[float, float]:
        leader = cluster.leader_of(topic, 0)
        started = time.monotonic()
        cluster.kill([leader])
        # The failover is over when every partition has a live leader again.
        deadline = started + 60
        while time.monotonic() < deadline:
            leaders = {cluster.leader_of(topic, p) for p in range(3)}
            if leader not in leaders and -1 not in leaders:
                break
            await asyncio.sleep(0.1)
        return started, time.monotonic()

    await _fault_under_load(make_settings, cluster, sqlite_url, "leader-killed", kill_leader)


async def test_two_of_three_brokers_killed(
    make_settings: SettingsFactory, cluster: KafkaCluster, sqlite_url: str
) -> None:
    async def kill_two(topic: str) -> tuple[float, float]:
        started = time.monotonic()
        cluster.kill([2, 3])  # below min.insync.replicas: no write can be acknowledged
        await asyncio.sleep(8.0)
        await asyncio.to_thread(cluster.start, [2])
        return started, time.monotonic()

    await _fault_under_load(make_settings, cluster, sqlite_url, "two-killed", kill_two)


async def test_whole_cluster_paused(
    make_settings: SettingsFactory, cluster: KafkaCluster, sqlite_url: str
) -> None:
    async def pause_all(topic: str) -> tuple[float, float]:
        started = time.monotonic()
        cluster.pause()
        await asyncio.sleep(15.0)
        cluster.resume()
        return started, time.monotonic()

    await _fault_under_load(make_settings, cluster, sqlite_url, "all-paused", pause_all)


async def test_broker_restarted_with_its_data(
    make_settings: SettingsFactory, cluster: KafkaCluster, sqlite_url: str
) -> None:
    async def restart_leader(topic: str) -> tuple[float, float]:
        leader = cluster.leader_of(topic, 0)
        started = time.monotonic()
        await asyncio.to_thread(cluster.stop, [leader])  # a controlled shutdown, data kept
        await asyncio.to_thread(cluster.start, [leader])
        return started, time.monotonic()

    await _fault_under_load(make_settings, cluster, sqlite_url, "leader-restarted", restart_leader)
