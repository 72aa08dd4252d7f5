"""Two service processes on two ports, one PostgreSQL, one broker: they must not step on each other.

Both post while the broker is down (both spool), both relay when it is back; then one instance is
SIGKILLed with a full spool and the other delivers its rows once their claims' lease has run out.
Every accepted event must arrive, and none twice: the relays claim rows, so a row is published by
one instance only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devbroker import free_port
from tests.conftest import attempt, topic_settings
from tests.integration.test_service_process import _env, _running_service
from tests.kafka_helpers import read_topic
from tests.services import brokers
from tests.services.brokers import Broker
from tests.traffic import Poster, check_arrival

pytestmark = pytest.mark.integration

SHARED = {
    "IDEMPOTENCY_STORE": "database",
    "KAFKA_PRODUCER_TIMEOUT": "1s",
    "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "3",
    "CIRCUIT_BREAKER_RESET_TIMEOUT": "1s",
    "KAFKA_RETRY_INITIAL_DELAY": "50ms",
    "SPOOL_RELAY_INTERVAL": "200ms",
    "SPOOL_RELAY_BATCH": "5",  # small rounds over many keys, so both relays take part
    "SPOOL_CLAIM_LEASE": "3s",
    "ROUTING_RULES_POLL_INTERVAL": "500ms",
}
if brokers.is_tansu():
    # The development broker keeps producer ids in memory: restarted, it hands out ids from 1 again,
    # so a producer from before the restart and one created after can share an id, and the broker
    # then drops one's records as duplicates of the other's while acknowledging them (seen here:
    # PRODUCER_FENCED between the two instances, records acknowledged and missing). Apache Kafka
    # persists its producer ids, so there the test keeps idempotence on.
    SHARED["KAFKA_PRODUCER_CONFIG__ENABLE_IDEMPOTENCE"] = "false"


async def _metrics(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/metrics/publisher")).json()
    return body


async def _spool_drained(client: httpx.AsyncClient, within: float) -> int:
    deadline = time.monotonic() + within
    while True:
        depth = int((await _metrics(client))["spool"]["depth"])  # the shared table: every instance's rows
        if depth == 0 or time.monotonic() > deadline:
            return depth
        await asyncio.sleep(0.25)


async def _outage(broker: Broker, posters: list[Poster], seconds: float) -> None:
    broker.kill()
    for poster in posters:
        poster.start()
    await asyncio.sleep(seconds)


async def test_two_instances_share_spool_rules_and_keys_without_double_publishing(
    dev_broker: Broker, postgres_url: str, tmp_path: Path
) -> None:
    port_a, port_b = free_port(), free_port()
    topics = {key.upper(): value for key, value in topic_settings(f"multi{port_a}").items()}
    env = _env(KAFKA_BROKERS=dev_broker.bootstrap, DATABASE_URL=postgres_url, **topics, **SHARED)
    with (
        _running_service(env, port_a, tmp_path / "a.log") as process_a,
        _running_service(env, port_b, tmp_path / "b.log"),
    ):
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_a}", timeout=30) as a,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_b}", timeout=30) as b,
        ):
            await _shared_state_checks(a, b, topics["KAFKA_TOPIC_SESSIONS"])
            await Poster(a, ["warm"]).run_for(0.3)  # both producers know the cluster
            await Poster(b, ["warm-b"]).run_for(0.3)

            # 1. Outage: both accept and spool; broker back: both relays drain the shared spool.
            first = [Poster(a, [f"a{n}" for n in range(10)]), Poster(b, [f"b{n}" for n in range(10)])]
            await _outage(dev_broker, first, 2.5)
            await asyncio.to_thread(dev_broker.start)
            await asyncio.sleep(1.0)
            first_traffic = [await poster.stop() for poster in first]
            assert await _spool_drained(a, within=60) == 0
            relayed = [int((await _metrics(client))["records_relayed"]) for client in (a, b)]
            spooled = [int((await _metrics(client))["records_spooled"]) for client in (a, b)]
            # The development broker keeps records in memory only: read them before the next kill.
            first_accepted = {**first_traffic[0].accepted, **first_traffic[1].accepted}
            first_arrival = check_arrival(
                first_accepted,
                read_topic(
                    dev_broker.bootstrap, topics["KAFKA_TOPIC_ACTIVITIES"], expected=len(first_accepted)
                ),
            )

            # 2. Outage again; instance A dies (SIGKILL) with rows in the spool, some claimed by its relay.
            second = [Poster(a, [f"a{n}" for n in range(3, 6)]), Poster(b, [f"b{n}" for n in range(3, 6)])]
            await _outage(dev_broker, second, 2.5)
            traffic_a_before_kill = await second[0].stop()
            process_a.send_signal(signal.SIGKILL)
            process_a.wait(timeout=10)
            depth_at_kill = int((await _metrics(b))["spool"]["depth"])
            await asyncio.to_thread(dev_broker.start)
            await asyncio.sleep(1.0)
            traffic_b = await second[1].stop()
            left = await _spool_drained(b, within=60)  # B takes A's rows once their lease ran out

    assert left == 0
    second_accepted = {**traffic_a_before_kill.accepted, **traffic_b.accepted}
    records = read_topic(
        dev_broker.bootstrap, topics["KAFKA_TOPIC_ACTIVITIES"], expected=len(second_accepted)
    )
    second_arrival = check_arrival(second_accepted, records)
    print(
        f"\n[multi-instance] outage 1: accepted a={len(first_traffic[0].accepted)} b={len(first_traffic[1].accepted)}, "
        f"spooled a={spooled[0]} b={spooled[1]}, relayed a={relayed[0]} b={relayed[1]}, "
        f"missing={len(first_arrival.missing)} duplicates={first_arrival.duplicates}"
        f"\n[multi-instance] outage 2 + A killed: accepted a={len(traffic_a_before_kill.accepted)} "
        f"b={len(traffic_b.accepted)}, spool at the kill={depth_at_kill}, delivered by B, "
        f"missing={len(second_arrival.missing)} duplicates={second_arrival.duplicates}"
    )
    assert sum(spooled) > 0
    assert sum(relayed) >= sum(spooled)
    assert depth_at_kill > 0, "A should have died with rows in the spool"
    for arrival in (first_arrival, second_arrival):
        assert arrival.missing == set()
        assert arrival.order_violations == []
    # Two relays sharing the spool never deliver a row twice: none after the first outage. After the
    # second, an instance killed mid-outage and the broker restarting under live traffic, at least
    # once allows a duplicate (same event id): a request that spooled what Kafka had not yet
    # acknowledged, delivered by the producer as well (seen on a loaded machine with Apache Kafka).
    assert first_arrival.duplicates == 0
    assert second_arrival.duplicates <= depth_at_kill


async def _shared_state_checks(a: httpx.AsyncClient, b: httpx.AsyncClient, sessions_topic: str) -> None:
    """Idempotency keys and routing rules written through one instance hold on the other."""
    event = attempt(client_attempt_id=f"shared-{os.getpid()}")
    assert (await a.post("/v1/events/attempts", json=event)).status_code == 202
    again = await b.post("/v1/events/attempts", json=event)
    assert again.json()["status"] == "duplicate"
    rule = {
        "id": "multi-instance",
        "name": "added through A",
        "event_types": ["session"],
        "topics": [sessions_topic],
        "priority": 5,
    }
    created = await a.post("/admin/routing-rules", json=rule)
    assert created.status_code == 201, created.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ids = {item["id"] for item in (await b.get("/admin/routing-rules")).json()["rules"]}
        if "multi-instance" in ids:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("a rule added through A did not reach B within 10 s")
