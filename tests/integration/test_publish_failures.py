"""What clients are told when Kafka cannot take an event: faults made for real, not mocked.

Each test that pauses or kills a broker uses one of its own (the `dev_broker` fixture).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from starlette.types import Message

from app.factory import create_app
from tests.conftest import SettingsFactory, activity_event, running
from tests.kafka_helpers import read_topic
from tests.services import brokers
from tests.services.brokers import Broker

pytestmark = pytest.mark.integration


async def test_record_over_the_size_limit_goes_to_the_dlq_at_once_with_headers(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(kafka_message_max_bytes=2000)
    big = activity_event(user_id="big-user", properties={"blob": "x" * 5000})
    async with running(create_app(settings)) as client:
        response = await client.post("/v1/events/activities", json=big)
        small = await client.post("/v1/events/activities", json=activity_event())
        metrics = (await client.get("/metrics/publisher")).json()

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "record_rejected"
    assert body["retriable"] is False
    assert body["dead_lettered"] is True
    assert "MSG_SIZE_TOO_LARGE" in body["detail"]
    assert small.status_code == 202
    assert metrics["events_failed"] == 1
    assert metrics["events_retried"] == 0
    assert metrics["events_dlq"] == 1
    assert metrics["circuit_breaker"]["state"] == "closed"  # a bad record is not an outage

    (record,) = read_topic(settings.kafka_brokers, settings.kafka_topic_dlq, expected=1)
    assert record.key == b"big-user"
    assert orjson.loads(record.value)["properties"] == big["properties"]
    assert record.headers["event_id"].decode() == body["event_id"]
    assert record.headers["original_topic"].decode() == settings.kafka_topic_activities
    assert record.headers["dlq_reason"].startswith(b"MSG_SIZE_TOO_LARGE")
    assert record.headers["dlq_timestamp"].endswith(b"Z")
    assert record.headers["dlq_attempts"] == b"0"
    assert (
        read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=1)[0].headers["event_id"]
        == small.json()["event_id"].encode()
    )


async def test_stopped_broker_spools_opens_the_breaker_and_the_relay_delivers_after_restart(
    make_settings: SettingsFactory, dev_broker: Broker
) -> None:
    settings = make_settings(
        kafka_brokers=dev_broker.bootstrap,
        kafka_producer_timeout="1s",
        circuit_breaker_failure_threshold=2,
        circuit_breaker_reset_timeout="2s",
        spool_relay_interval="200ms",
    )
    accepted: list[str] = []
    async with running(create_app(settings)) as client:
        first = await client.post("/v1/events/activities", json=activity_event())
        # A broker of this test's own: a fresh Apache Kafka may take longer than the 1 s producer
        # timeout to take its first record (seen once in a clean run); the event is then spooled
        # and relayed, which is as good, and the outage below starts once it is delivered.
        assert first.json()["status"] in ("accepted", "spooled"), first.text
        accepted.append(first.json()["event_id"])
        deadline = time.monotonic() + 30
        before = (await client.get("/metrics/publisher")).json()
        while time.monotonic() < deadline and before["spool"]["depth"] > 0:
            await asyncio.sleep(0.2)
            before = (await client.get("/metrics/publisher")).json()
        assert before["spool"]["depth"] == 0
        relayed_before = before["records_relayed"]
        dev_broker.kill()

        for user in ("u1", "u2"):  # each waits for the producer timeout, then is spooled
            response = await client.post("/v1/events/activities", json=activity_event(user_id=user))
            assert response.status_code == 202
            assert response.json()["status"] == "spooled"
            accepted.append(response.json()["event_id"])

        started = time.monotonic()
        fast = await client.post("/v1/events/activities", json=activity_event(user_id="u3"))
        assert fast.json()["status"] == "spooled"
        assert time.monotonic() - started < 0.5  # the open breaker spools at once
        accepted.append(fast.json()["event_id"])

        health = await client.get("/metrics/publisher/health")
        assert health.status_code == 503
        checks = {check["name"]: check["status"] for check in health.json()["checks"]}
        assert checks["circuit_breaker"] == "fail"
        assert checks["spool"] == "warn"
        prometheus = (await client.get("/metrics/prometheus")).text
        assert "event_ingest_circuit_breaker_state 2.0" in prometheus
        assert "event_ingest_spool_depth 3.0" in prometheus

        await asyncio.to_thread(dev_broker.start)
        deadline = time.monotonic() + 30
        metrics = (await client.get("/metrics/publisher")).json()
        while time.monotonic() < deadline and metrics["records_relayed"] < relayed_before + 3:
            await asyncio.sleep(0.2)
            metrics = (await client.get("/metrics/publisher")).json()
        assert metrics["records_relayed"] == relayed_before + 3
        assert metrics["circuit_breaker"]["state"] == "closed"
        states = [item["state"] for item in metrics["circuit_breaker"]["transitions"]]
        assert states[0] == "open"
        assert "half-open" in states, states  # trials may fail while the broker restarts
        assert states[-1] == "closed"
        assert "event_ingest_circuit_breaker_state 0.0" in (await client.get("/metrics/prometheus")).text

    # The restarted development broker is empty: it holds exactly what was spooled during the outage.
    # Apache Kafka kept the first event on disk.
    kept = accepted[1:] if brokers.is_tansu() else accepted
    records = read_topic(dev_broker.bootstrap, settings.kafka_topic_activities, expected=len(kept))
    assert sorted(record.headers["event_id"].decode() for record in records) == sorted(kept)


async def _post_until_accepted(client: httpx.AsyncClient) -> None:
    """Posts an event until Kafka acknowledges one directly (status `accepted`, not `spooled`); at most 60 s."""
    deadline = time.monotonic() + 60
    while True:
        answer = await client.post("/v1/events/activities", json=activity_event(), timeout=30)
        assert answer.status_code == 202, answer.text
        if answer.json()["status"] == "accepted":
            return
        assert time.monotonic() < deadline, "Kafka acknowledged no event directly within 60 s"
        await asyncio.sleep(0.5)


async def test_full_producer_queue_answers_429_with_retry_after(
    make_settings: SettingsFactory, dev_broker: Broker
) -> None:
    settings = make_settings(
        kafka_brokers=dev_broker.bootstrap,
        kafka_producer_timeout="2s",
        kafka_queue_max_messages=2,
        circuit_breaker_failure_threshold=100,
    )
    async with running(create_app(settings)) as client:
        # The producer must be past its start before the broker pauses: on a slow machine Apache Kafka may
        # take longer than the 2 s fault deadline to grant the idempotent producer its id, and an event
        # spooled then starts a recovery in which the batch would be spooled too (202), never queued.
        await _post_until_accepted(client)
        dev_broker.pause()
        try:
            batch = {"events": [{"event_type": "activity", **activity_event()} for _ in range(5)]}
            response = await client.post("/v1/events/batch", json=batch)
        finally:
            dev_broker.resume()
        metrics = (await client.get("/metrics/publisher")).json()

    assert response.status_code == 207
    codes = [item["errors"][0]["code"] for item in response.json()["results"] if item["status"] == "rejected"]
    assert codes
    assert set(codes) == {"queue_full"}
    assert response.headers["Retry-After"] == "1"
    assert metrics["events_rejected"]["queue_full"] == len(codes)


async def test_in_flight_bound_refuses_with_429_instead_of_buffering(make_settings: SettingsFactory) -> None:
    settings = make_settings(max_in_flight_records=3)
    async with running(create_app(settings)) as client:
        batch = {"events": [{"event_type": "activity", **activity_event()} for _ in range(4)]}
        too_many = await client.post("/v1/events/batch", json=batch)
        single = await client.post("/v1/events/activities", json=activity_event())

    assert too_many.status_code == 207
    assert {item["errors"][0]["code"] for item in too_many.json()["results"]} == {"queue_full"}
    assert too_many.headers["Retry-After"] == "1"
    assert single.status_code == 202


async def _gated_body(
    gate: asyncio.Event, content: bytes, sent: asyncio.Event | None = None
) -> AsyncIterator[bytes]:
    """A request body that arrives when the test opens `gate`: its request stays in progress (or
    waits for a slot) until then. `sent` is set once the server has started reading it."""
    if sent is not None:
        sent.set()
    await gate.wait()
    yield content


async def _holding_a_slot(client: httpx.AsyncClient, finish: asyncio.Event) -> asyncio.Task[httpx.Response]:
    """A single event whose request holds a slot, in progress until `finish` is set."""
    body_sent = asyncio.Event()
    body = _gated_body(finish, orjson.dumps(activity_event(user_id="slow")), body_sent)
    headers = {"Content-Type": "application/json"}
    slow = asyncio.create_task(client.post("/v1/events/activities", content=body, headers=headers))
    await asyncio.wait_for(body_sent.wait(), 5)
    await asyncio.sleep(0.1)  # inside the app
    return slow


async def test_requests_past_the_concurrency_limit_are_shed_before_their_body_is_read(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(max_concurrent_requests=2, max_queued_requests=0)
    finish = asyncio.Event()

    async with running(create_app(settings)) as client:
        slow = [await _holding_a_slot(client, finish) for _ in range(2)]
        shed = await client.post("/v1/events/activities", json=activity_event(user_id="shed"))
        operations = await client.get("/healthz")  # only ingest routes are limited
        finish.set()
        finished = await asyncio.wait_for(asyncio.gather(*slow), 10)
        after = await client.post("/v1/events/activities", json=activity_event(user_id="after"))
        text = (await client.get("/metrics/prometheus")).text

    assert shed.status_code == 503
    assert shed.json()["code"] == "overloaded"
    assert shed.json()["retriable"] is True
    assert shed.headers["Retry-After"] == "1"
    assert operations.status_code == 200
    assert [response.status_code for response in finished] == [202, 202]
    assert after.status_code == 202  # the slots are free again
    assert "event_ingest_requests_shed_total 1.0" in text


async def test_requests_past_the_concurrency_limit_wait_in_turn_and_past_the_queue_are_shed(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(max_concurrent_requests=1, max_queued_requests=2, request_queue_timeout="10s")
    finish = asyncio.Event()

    async with running(create_app(settings)) as client:
        slow = await _holding_a_slot(client, finish)
        waiting = [
            asyncio.create_task(client.post("/v1/events/batch", json={"events": [batch_item]}))
            for batch_item in (
                {"event_type": "activity", **activity_event(user_id="first")},
                {"event_type": "activity", **activity_event(user_id="second")},
            )
        ]
        await asyncio.sleep(0.2)  # both wait for the slot
        shed = await client.post("/v1/events/activities", json=activity_event(user_id="shed"))
        assert not any(task.done() for task in waiting)
        while_waiting = (await client.get("/metrics/prometheus")).text
        finish.set()
        done = await asyncio.wait_for(asyncio.gather(slow, *waiting), 10)
        text = (await client.get("/metrics/prometheus")).text

    assert shed.status_code == 503
    assert shed.json()["code"] == "overloaded"
    assert [response.status_code for response in done] == [202, 202, 202]
    assert [response.json()["results"][0]["status"] for response in done[1:]] == ["accepted"] * 2
    assert "event_ingest_requests_waiting 2.0" in while_waiting
    assert "event_ingest_requests_queued_total 2.0" in text
    assert "event_ingest_requests_waiting 0.0" in text
    assert "event_ingest_requests_shed_total 1.0" in text


async def test_a_request_the_fast_path_hands_on_keeps_its_slot_rather_than_queue_again(
    make_settings: SettingsFactory,
) -> None:
    # Its body is read already: queueing it behind the others would hold that body for nothing.
    settings = make_settings(max_concurrent_requests=2, max_queued_requests=5, request_queue_timeout="10s")
    gates = {name: asyncio.Event() for name in ("valid", "invalid", "queued")}

    async with running(create_app(settings)) as client:
        headers = {"Content-Type": "application/json"}
        valid_event = orjson.dumps(activity_event(user_id="valid"))
        batch = orjson.dumps({"events": [{"event_type": "activity", **activity_event(user_id="queued")}]})

        def post(path: str, name: str, content: bytes) -> asyncio.Task[httpx.Response]:
            return asyncio.create_task(
                client.post(path, content=_gated_body(gates[name], content), headers=headers)
            )

        valid = post("/v1/events/activities", "valid", valid_event)  # holds a slot
        invalid = post("/v1/events/activities", "invalid", b'{"user_id": "no event"}')  # the other
        await asyncio.sleep(0.2)
        queued = post("/v1/events/batch", "queued", batch)  # waits for a slot
        await asyncio.sleep(0.2)
        gates["invalid"].set()
        refused = await asyncio.wait_for(invalid, 5)  # not behind the queued request
        gates["queued"].set()
        gates["valid"].set()
        others = await asyncio.wait_for(asyncio.gather(valid, queued), 10)

    assert refused.status_code == 422
    assert [response.status_code for response in others] == [202, 202]


async def test_a_request_that_waits_past_the_queue_timeout_is_shed(make_settings: SettingsFactory) -> None:
    settings = make_settings(max_concurrent_requests=1, max_queued_requests=5, request_queue_timeout="300ms")
    finish = asyncio.Event()

    async with running(create_app(settings)) as client:
        slow = await _holding_a_slot(client, finish)
        started = time.monotonic()
        shed = await client.post("/v1/events/activities", json=activity_event(user_id="late"))
        waited = time.monotonic() - started
        finish.set()
        assert (await asyncio.wait_for(slow, 10)).status_code == 202

    assert shed.status_code == 503
    assert shed.json()["code"] == "overloaded"
    assert shed.headers["Retry-After"] == "1"
    assert waited >= 0.3


@pytest.mark.parametrize("path", ["/v1/events/activities", "/v1/events/batch"])
async def test_a_client_that_leaves_before_its_body_arrives_is_no_server_error(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    # Clients that give up while their request waits for a slot leave like this, in numbers.
    app = create_app(make_settings())
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"300")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    async with running(app) as client:
        with caplog.at_level(logging.INFO):
            await app(scope, receive, send)
        text = (await client.get("/metrics/prometheus")).text

    assert sent[0]["status"] == 499
    assert "unhandled error" not in caplog.text
    assert "client left before sending its whole request" in caplog.text
    assert f'http_requests_total{{handler="{path}",method="POST",status="4xx"}} 1.0' in text
