"""Repeated events are published once; `?ack=spool` answers from the spool and the relay delivers."""

from __future__ import annotations

import httpx
import pytest

from app.config.settings import Settings
from app.factory import create_app
from tests.conftest import SettingsFactory, activity_event, at, attempt, running
from tests.kafka_helpers import read_topic
from tests.traffic import wait_until_spool_empty

pytestmark = pytest.mark.integration


async def test_repeated_client_attempt_id_is_a_duplicate_with_the_first_event_id(
    service: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, settings = service
    event = attempt(client_attempt_id="same-attempt", quality=2)

    first = await client.post("/v1/events/attempts", json=event)
    second = await client.post("/v1/events/attempts", json=event)
    other_user = await client.post("/v1/events/attempts", json={**event, "user_id": "someone-else"})

    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json() == {
        "event_id": first.json()["event_id"],
        "status": "duplicate",
        "topics": [settings.kafka_topic_attempts],
    }
    assert other_user.status_code == 202  # the key is per user
    records = read_topic(settings.kafka_brokers, settings.kafka_topic_attempts, expected=2)
    assert len(records) == 2
    assert (await client.get("/metrics/publisher")).json()["events_duplicate"] == 1


async def test_idempotency_key_header_works_for_any_event(
    service: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, settings = service
    headers = {"Idempotency-Key": "request-123"}

    first = await client.post("/v1/events/activities", json=activity_event(), headers=headers)
    second = await client.post("/v1/events/activities", json=activity_event(), headers=headers)

    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["event_id"] == first.json()["event_id"]
    assert len(read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=1)) == 1


async def test_retried_batch_gets_the_first_results_for_items_already_taken(
    service: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, settings = service
    headers = {"Idempotency-Key": "batch-7"}
    events = [{"event_type": "activity", **activity_event(user_id=f"u{n}")} for n in range(3)]
    events[1]["occurred_at"] = "not a time"

    first = await client.post("/v1/events/batch", json={"events": events}, headers=headers)
    events[1]["occurred_at"] = at(90)  # the client fixes the bad item and retries
    second = await client.post("/v1/events/batch", json={"events": events}, headers=headers)

    assert first.status_code == 207
    assert second.status_code == 202
    one, two = first.json()["results"], second.json()["results"]
    assert [item["status"] for item in two] == ["accepted", "accepted", "accepted"]
    assert two[0]["event_id"] == one[0]["event_id"]
    assert two[2]["event_id"] == one[2]["event_id"]
    records = read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=3)
    assert len(records) == 3


async def test_a_refused_event_is_not_remembered(make_settings: SettingsFactory) -> None:
    settings = make_settings(kafka_message_max_bytes=2000)
    async with running(create_app(settings)) as client:
        big = activity_event(properties={"blob": "x" * 3000})
        headers = {"Idempotency-Key": "too-big"}
        assert (await client.post("/v1/events/activities", json=big, headers=headers)).status_code == 422
        small = await client.post("/v1/events/activities", json=activity_event(), headers=headers)
        assert small.status_code == 202


async def test_database_idempotency_is_shared_between_instances(
    make_settings: SettingsFactory, database_url: str
) -> None:
    settings = make_settings(idempotency_store="database", database_url=database_url)
    event = attempt(client_attempt_id="shared-attempt")
    async with (
        running(create_app(settings)) as first_instance,
        running(create_app(settings)) as second_instance,
    ):
        first = await first_instance.post("/v1/events/attempts", json=event)
        second = await second_instance.post("/v1/events/attempts", json=event)

    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["event_id"] == first.json()["event_id"]


async def test_ack_spool_answers_spooled_and_the_relay_delivers(make_settings: SettingsFactory) -> None:
    settings = make_settings(spool_relay_interval="100ms")
    async with running(create_app(settings)) as client:
        response = await client.post("/v1/events/activities?ack=spool", json=activity_event(user_id="fast"))
        assert response.status_code == 202
        assert response.json()["status"] == "spooled"
        metrics = await wait_until_spool_empty(client, within=30)
        assert metrics["records_relayed"] == 1

    (record,) = read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=1)
    assert record.headers["event_id"].decode() == response.json()["event_id"]
    assert record.key == b"fast"


async def test_unknown_ack_level_is_422(service: tuple[httpx.AsyncClient, Settings]) -> None:
    client, _ = service
    response = await client.post("/v1/events/activities?ack=maybe", json=activity_event())
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "ack"


async def test_full_spool_answers_503_with_retry_after(make_settings: SettingsFactory) -> None:
    # A relay interval longer than the test keeps the two records in the spool.
    settings = make_settings(spool_max_records=2, spool_relay_interval="1m")
    async with running(create_app(settings)) as client:
        answers = [
            await client.post("/v1/events/activities?ack=spool", json=activity_event(user_id=f"s{n}"))
            for n in range(3)
        ]

    assert [answer.status_code for answer in answers] == [202, 202, 503]
    assert answers[2].json()["code"] == "spool_full"
    assert answers[2].json()["retriable"] is True
    assert int(answers[2].headers["Retry-After"]) >= 1


async def test_records_past_the_spool_age_go_to_the_dlq(make_settings: SettingsFactory) -> None:
    settings = make_settings(spool_max_age="1ms", spool_relay_interval="100ms")
    async with running(create_app(settings)) as client:
        response = await client.post("/v1/events/activities?ack=spool", json=activity_event(user_id="late"))
        assert response.json()["status"] == "spooled"
        metrics = await wait_until_spool_empty(client, within=30)

    assert metrics["events_dlq"] == 1
    (record,) = read_topic(settings.kafka_brokers, settings.kafka_topic_dlq, expected=1)
    assert record.headers["event_id"].decode() == response.json()["event_id"]
    assert record.headers["dlq_reason"].startswith(b"spool_expired")
    assert record.headers["original_topic"].decode() == settings.kafka_topic_activities
    assert record.key == b"late"


@pytest.mark.parametrize("store", ["memory", "database"])
async def test_a_batch_repeating_an_attempt_answers_it_duplicate_then_replays_both_answers(
    make_settings: SettingsFactory, database_url: str, store: str
) -> None:
    # Item 1 repeats item 0's attempt: its request key is reserved, then released when its attempt
    # key turns out known. A retry of the batch replays item 0 and finds item 1 a duplicate again.
    settings = make_settings(idempotency_store=store, database_url=database_url)
    headers = {"Idempotency-Key": f"mixed-{store}"}
    same = {"event_type": "attempt", **attempt(client_attempt_id="repeated", quality=1)}
    batch = {"events": [same, same]}
    async with running(create_app(settings)) as client:
        first = await client.post("/v1/events/batch", json=batch, headers=headers)
        retry = await client.post("/v1/events/batch", json=batch, headers=headers)

    assert first.status_code == 202
    assert retry.status_code == 202
    one, two = first.json()["results"], retry.json()["results"]
    assert [item["status"] for item in one] == ["accepted", "duplicate"]
    assert [item["status"] for item in two] == ["accepted", "duplicate"]
    assert {item["event_id"] for item in one + two} == {one[0]["event_id"]}
    records = read_topic(settings.kafka_brokers, settings.kafka_topic_attempts, expected=2, timeout=5)
    assert [record.headers["event_id"] for record in records] == [one[0]["event_id"].encode()]
