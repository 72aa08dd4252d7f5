"""What clients are told when Kafka cannot take an event: faults made for real, not mocked.

Each test uses a broker of its own (the `dev_broker` fixture) so it can pause or kill it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from app.devbroker import DevBroker
from app.factory import create_app
from tests.conftest import SettingsFactory, activity_event, running
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration


async def test_record_over_the_size_limit_is_refused_as_permanent_without_retry(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(kafka_message_max_bytes=2000)
    async with running(create_app(settings)) as client:
        response = await client.post(
            "/v1/events/activities", json=activity_event(properties={"blob": "x" * 5000})
        )
        small = await client.post("/v1/events/activities", json=activity_event())
        metrics = (await client.get("/metrics/publisher")).json()

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "record_rejected"
    assert body["retriable"] is False
    assert "MSG_SIZE_TOO_LARGE" in body["detail"]
    assert small.status_code == 202
    assert metrics["events_failed"] == 1
    assert metrics["events_retried"] == 0
    assert metrics["circuit_breaker"]["state"] == "closed"  # a bad record is not an outage


async def test_stopped_broker_gives_503_with_retry_after_and_opens_the_breaker(
    make_settings: SettingsFactory, dev_broker: DevBroker
) -> None:
    settings = make_settings(
        kafka_brokers=dev_broker.bootstrap,
        kafka_producer_timeout="1s",
        circuit_breaker_failure_threshold=2,
        circuit_breaker_reset_timeout="2s",
    )
    async with running(create_app(settings)) as client:
        assert (await client.post("/v1/events/activities", json=activity_event())).status_code == 202
        dev_broker.kill()

        failures = [await client.post("/v1/events/activities", json=activity_event()) for _ in range(2)]
        for failure in failures:
            assert failure.status_code == 503
            assert failure.json()["code"] == "broker_unavailable"
            assert failure.json()["retriable"] is True
            assert int(failure.headers["Retry-After"]) >= 1

        started = time.monotonic()
        fast = await client.post("/v1/events/activities", json=activity_event())
        assert fast.status_code == 503
        assert time.monotonic() - started < 0.5  # the open breaker answers at once
        assert "circuit breaker open" in fast.json()["detail"]

        health = await client.get("/metrics/publisher/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy"
        breaker_check = next(c for c in health.json()["checks"] if c["name"] == "circuit_breaker")
        assert breaker_check["status"] == "fail"
        prometheus = (await client.get("/metrics/prometheus")).text
        assert "event_ingest_circuit_breaker_state 2.0" in prometheus
        assert (await client.get("/readyz")).status_code in {200, 503}

        dev_broker.start()
        await asyncio.sleep(2.2)  # past the reset timeout: the next request is the trial
        deadline = time.monotonic() + 20
        recovered = None
        while time.monotonic() < deadline:
            recovered = await client.post("/v1/events/activities", json=activity_event(activity_type="back"))
            if recovered.status_code == 202:
                break
            await asyncio.sleep(0.5)
        assert recovered is not None
        assert recovered.status_code == 202, recovered.text
        metrics = (await client.get("/metrics/publisher")).json()
        assert metrics["circuit_breaker"]["state"] == "closed"
        states = [item["state"] for item in metrics["circuit_breaker"]["transitions"]]
        assert states[:2] == ["open", "half-open"]
        assert states[-1] == "closed"

    # The restarted broker is empty: what it holds is exactly what was accepted after recovery.
    records = read_topic(dev_broker.bootstrap, settings.kafka_topic_activities, expected=1)
    assert [record.headers["event_id"].decode() for record in records] == [recovered.json()["event_id"]]


async def test_full_producer_queue_answers_429_with_retry_after(
    make_settings: SettingsFactory, dev_broker: DevBroker
) -> None:
    settings = make_settings(
        kafka_brokers=dev_broker.bootstrap,
        kafka_producer_timeout="2s",
        kafka_queue_max_messages=2,
        circuit_breaker_failure_threshold=100,
    )
    async with running(create_app(settings)) as client:
        assert (await client.post("/v1/events/activities", json=activity_event())).status_code == 202
        dev_broker.pause()
        try:
            batch = {"events": [{"event_type": "activity", **activity_event()} for _ in range(5)]}
            response = await client.post("/v1/events/batch", json=batch)
            single_task = asyncio.create_task(client.post("/v1/events/activities", json=activity_event()))
            single = await single_task
        finally:
            dev_broker.resume()
        metrics = (await client.get("/metrics/publisher")).json()

    assert response.status_code == 207
    codes = [item["errors"][0]["code"] for item in response.json()["results"] if item["status"] == "rejected"]
    assert "queue_full" in codes
    assert response.headers["Retry-After"] == "1"
    assert single.status_code in {429, 503}
    assert "Retry-After" in single.headers
    assert metrics["events_rejected"].get("queue_full", 0) >= 1
