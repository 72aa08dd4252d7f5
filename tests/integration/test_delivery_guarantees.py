"""Nothing accepted is lost: the broker is paused, killed or absent while a client keeps posting.

Every event answered 2xx must turn up in its topic (or the DLQ) after recovery, counted by
event_id; each user's events keep their order (first occurrences); refusals carry Retry-After.
Duplicates are allowed only after a fault, and are counted and printed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.factory import create_app
from tests.conftest import SettingsFactory, running
from tests.kafka_helpers import read_topic
from tests.services import brokers
from tests.services.brokers import Broker
from tests.traffic import Poster, check_arrival, wait_until_spool_empty

pytestmark = pytest.mark.integration

USERS = [f"learner-{n}" for n in range(6)]
FAULT_SETTINGS = {
    "kafka_producer_timeout": "1s",
    "circuit_breaker_failure_threshold": 3,
    "circuit_breaker_reset_timeout": "1s",
    "spool_relay_interval": "200ms",
    "kafka_retry_initial_delay": "50ms",
}


def _report(name: str, traffic_accepted: int, refused: list[int], duplicates: int) -> None:
    print(f"\n[{name}] accepted={traffic_accepted} refused={len(refused)} duplicates={duplicates}")


async def test_paused_broker_loses_nothing(
    make_settings: SettingsFactory, dev_broker: Broker, database_url: str
) -> None:
    settings = make_settings(kafka_brokers=dev_broker.bootstrap, database_url=database_url, **FAULT_SETTINGS)
    async with running(create_app(settings)) as client:
        poster = Poster(client, USERS)
        poster.start()
        await asyncio.sleep(1.0)
        dev_broker.pause()  # SIGSTOP, longer than the producer timeout
        await asyncio.sleep(3.0)
        dev_broker.resume()
        await asyncio.sleep(1.5)
        traffic = await poster.stop()
        metrics = await wait_until_spool_empty(client, within=60)

    assert metrics["spool"] == {"depth": 0, "oldest_age_seconds": 0.0, "capacity": settings.spool_max_records}
    assert traffic.statuses.get("202", 0) == len(traffic.accepted)
    assert traffic.missing_retry_after == 0
    records = read_topic(
        dev_broker.bootstrap, settings.kafka_topic_activities, expected=len(traffic.accepted)
    )
    arrival = check_arrival(traffic.accepted, records)
    _report("pause", len(traffic.accepted), traffic.refused, arrival.duplicates)
    assert arrival.missing == set()
    assert arrival.order_violations == []
    assert metrics["records_spooled"] > 0, "the pause should have sent events to the spool"


async def test_killed_and_restarted_broker_loses_nothing_accepted_after_the_kill(
    make_settings: SettingsFactory, dev_broker: Broker, database_url: str
) -> None:
    settings = make_settings(kafka_brokers=dev_broker.bootstrap, database_url=database_url, **FAULT_SETTINGS)
    async with running(create_app(settings)) as client:
        await Poster(client, USERS).run_for(0.5)  # warm: the producer knows the cluster
        # The development broker keeps records in memory only: what it held dies with it. So we
        # count what was accepted from the kill on: during the outage and after the restart.
        dev_broker.kill()
        poster = Poster(client, USERS)
        poster.start()
        await asyncio.sleep(2.5)
        await asyncio.to_thread(dev_broker.start)
        await asyncio.sleep(2.0)
        traffic = await poster.stop()
        metrics = await wait_until_spool_empty(client, within=60)

    assert metrics["spool"]["depth"] == 0
    assert traffic.missing_retry_after == 0
    records = read_topic(
        dev_broker.bootstrap, settings.kafka_topic_activities, expected=len(traffic.accepted)
    )
    arrival = check_arrival(traffic.accepted, records)
    _report("kill", len(traffic.accepted), traffic.refused, arrival.duplicates)
    assert arrival.missing == set()
    assert arrival.order_violations == []


async def test_broker_absent_at_start_then_started(make_settings: SettingsFactory, tmp_path: Path) -> None:
    broker = brokers.new_broker(tmp_path)
    settings = make_settings(kafka_brokers=broker.bootstrap, **FAULT_SETTINGS)
    try:
        async with running(create_app(settings)) as client:
            assert (await client.get("/readyz")).status_code == 503
            poster = Poster(client, USERS[:3])
            poster.start()
            await asyncio.sleep(2.5)
            await asyncio.to_thread(broker.start)
            await asyncio.sleep(1.5)
            traffic = await poster.stop()
            metrics = await wait_until_spool_empty(client, within=60)
            await asyncio.sleep(2.1)  # past READINESS_CACHE
            assert (await client.get("/readyz")).status_code == 200
        assert metrics["spool"]["depth"] == 0
        records = read_topic(
            broker.bootstrap, settings.kafka_topic_activities, expected=len(traffic.accepted)
        )
        arrival = check_arrival(traffic.accepted, records)
        _report("absent", len(traffic.accepted), traffic.refused, arrival.duplicates)
        assert arrival.missing == set()
        assert arrival.order_violations == []
        assert set(traffic.statuses) == {"202"}
    finally:
        broker.stop()


async def test_without_faults_there_are_no_duplicates(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    async with running(create_app(settings)) as client:
        poster = Poster(client, USERS, pause=0.0)
        await poster.run_for(1.5)
        traffic = poster.traffic
    records = read_topic(
        settings.kafka_brokers, settings.kafka_topic_activities, expected=len(traffic.accepted)
    )
    arrival = check_arrival(traffic.accepted, records)
    assert arrival.missing == set()
    assert arrival.duplicates == 0
    assert arrival.order_violations == []
    assert len(records) == len(traffic.accepted)
