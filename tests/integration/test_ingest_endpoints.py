"""Every ingest endpoint and every default routing rule, against the real broker."""

from __future__ import annotations

import gzip
import uuid

import httpx
import orjson
import pytest

from app.config.settings import Settings
from app.factory import create_app
from app.serialization.generated import events_pb2
from tests.conftest import (
    ATTEMPT_TIME_UTC,
    SettingsFactory,
    activity_event,
    attempt,
    placement_event,
    running,
    session_event,
)
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_high_quality_attempt_goes_to_attempts_and_ml_training_with_key_and_headers(
    service: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, settings = service
    response = await client.post(
        "/v1/events/attempts",
        json=attempt(user_id="learner-7", quality=5),
        headers={"traceparent": TRACEPARENT},
    )

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "accepted"
    assert body["topics"] == [settings.kafka_topic_ml_training, settings.kafka_topic_attempts]
    for topic in body["topics"]:
        (record,) = read_topic(settings.kafka_brokers, topic, expected=1)
        assert record.key == b"learner-7"
        assert record.headers["event_id"] == body["event_id"].encode()
        assert record.headers["event_type"] == b"attempt"
        assert record.headers["schema_version"] == b"1"
        assert record.headers["content_type"] == b"application/json"
        assert record.headers["traceparent"] == TRACEPARENT.encode()
        value = orjson.loads(record.value)
        assert value["event_id"] == body["event_id"]
        assert value["occurred_at"] == ATTEMPT_TIME_UTC  # +01:00 normalized to UTC
        assert value["quality"] == 5


async def test_low_quality_attempt_goes_only_to_attempts(service: tuple[httpx.AsyncClient, Settings]) -> None:
    client, settings = service
    response = await client.post("/v1/events/attempts", json=attempt(quality=3))

    assert response.status_code == 202
    assert response.json()["topics"] == [settings.kafka_topic_attempts]


@pytest.mark.parametrize(("items_attempted", "routed"), [(3, True), (0, False)])
async def test_session_is_routed_only_when_items_were_attempted(
    service: tuple[httpx.AsyncClient, Settings], items_attempted: int, routed: bool
) -> None:
    client, settings = service
    response = await client.post(
        "/v1/events/sessions", json=session_event(items_attempted=items_attempted, items_correct=0)
    )

    assert response.status_code == 202
    body = response.json()
    if routed:
        assert body == {
            "event_id": body["event_id"],
            "status": "accepted",
            "topics": [settings.kafka_topic_sessions],
        }
        assert len(read_topic(settings.kafka_brokers, settings.kafka_topic_sessions, expected=1)) == 1
    else:
        assert body["status"] == "unrouted"
        assert body["topics"] == []
        metrics = (await client.get("/metrics/publisher")).json()
        assert metrics["events_unrouted"] == 1


@pytest.mark.parametrize(("status", "topics"), [("completed", 2), ("started", 0)])
async def test_completed_placement_goes_to_placements_and_ml_training(
    service: tuple[httpx.AsyncClient, Settings], status: str, topics: int
) -> None:
    client, settings = service
    response = await client.post("/v1/events/placements", json=placement_event(status=status))

    assert response.status_code == 202
    expected = [settings.kafka_topic_placements, settings.kafka_topic_ml_training][:topics]
    assert response.json()["topics"] == expected
    for topic in expected:
        assert len(read_topic(settings.kafka_brokers, topic, expected=1)) == 1


async def test_every_activity_goes_to_activities(service: tuple[httpx.AsyncClient, Settings]) -> None:
    client, settings = service
    response = await client.post("/v1/events/activities", json=activity_event())

    assert response.status_code == 202
    (record,) = read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=1)
    assert orjson.loads(record.value)["properties"] == {"lesson_id": "L-5"}


async def test_client_event_id_is_kept(service: tuple[httpx.AsyncClient, Settings]) -> None:
    client, _ = service
    event_id = str(uuid.uuid4())
    response = await client.post("/v1/events/activities", json=activity_event(event_id=event_id))

    assert response.json()["event_id"] == event_id


async def test_invalid_event_names_each_bad_field_and_publishes_nothing(
    service: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, _ = service
    bad = attempt(quality=9, occurred_at="2026-11-24T10:15:00", correct="yes")
    del bad["item_id"]

    response = await client.post("/v1/events/attempts", json=bad)

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    fields = {error["field"] for error in body["detail"]}
    assert fields == {"quality", "occurred_at", "correct", "item_id"}
    metrics = (await client.get("/metrics/publisher")).json()
    assert metrics["events_published"] == 0
    assert metrics["events_rejected"] == {"validation": 1}


async def test_batch_with_valid_and_invalid_items_answers_207_and_publishes_the_valid_ones_in_order(
    service: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, settings = service
    events = [
        {"event_type": "attempt", **attempt(user_id="u-a", quality=2, item_id="first")},
        {"event_type": "attempt", **attempt(user_id="u-a", quality=9)},
        {"event_type": "session", **session_event(items_attempted=0, items_correct=0)},
        {"event_type": "bogus", "user_id": "u"},
        "not an object",
        {"event_type": "attempt", **attempt(user_id="u-a", quality=1, item_id="second")},
    ]

    response = await client.post("/v1/events/batch", json={"events": events})

    assert response.status_code == 207, response.text
    body = response.json()
    assert (body["accepted"], body["unrouted"], body["rejected"]) == (2, 1, 3)
    statuses = [item["status"] for item in body["results"]]
    assert statuses == ["accepted", "rejected", "unrouted", "rejected", "rejected", "accepted"]
    assert [item["index"] for item in body["results"]] == list(range(6))
    bad_quality = body["results"][1]["errors"][0]
    assert bad_quality == {
        "code": "validation_error",
        "field": "quality",
        "message": "Input should be less than or equal to 5",
        "retriable": False,
    }
    assert body["results"][3]["errors"][0]["field"] == "event_type"
    assert (
        body["results"][4]["errors"][0]["message"]
        == "Input should be a valid dictionary or object to extract fields from"
    )
    records = read_topic(settings.kafka_brokers, settings.kafka_topic_attempts, expected=2)
    assert [orjson.loads(record.value)["item_id"] for record in records] == ["first", "second"]


async def test_batch_all_valid_answers_202(service: tuple[httpx.AsyncClient, Settings]) -> None:
    client, settings = service
    events = [{"event_type": "activity", **activity_event(user_id=f"u{i}")} for i in range(50)]

    response = await client.post("/v1/events/batch", json={"events": events})

    assert response.status_code == 202
    assert response.json()["accepted"] == 50
    assert len(read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=50)) == 50


@pytest.mark.parametrize("body", [[1, 2], {"items": []}, {"events": "x"}, {"events": [], "extra": 1}])
async def test_batch_envelope_that_is_not_a_batch_is_422(
    service: tuple[httpx.AsyncClient, Settings], body: object
) -> None:
    client, _ = service
    response = await client.post("/v1/events/batch", json=body)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_batch_over_the_limit_is_413_and_publishes_nothing(make_settings: SettingsFactory) -> None:
    settings = make_settings(max_batch_events=3)
    async with running(create_app(settings)) as client:
        events = [{"event_type": "activity", **activity_event()} for _ in range(4)]
        response = await client.post("/v1/events/batch", json={"events": events})

        assert response.status_code == 413
        assert "limit is 3" in response.json()["detail"]
        assert (await client.get("/metrics/publisher")).json()["events_published"] == 0


async def test_gzip_request_body_is_accepted(service: tuple[httpx.AsyncClient, Settings]) -> None:
    client, settings = service
    payload = gzip.compress(orjson.dumps(attempt(quality=1)))
    response = await client.post(
        "/v1/events/attempts",
        content=payload,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )

    assert response.status_code == 202, response.text
    assert len(read_topic(settings.kafka_brokers, settings.kafka_topic_attempts, expected=1)) == 1


async def test_protobuf_serialization_is_decodable_with_the_generated_class(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(kafka_serialization="protobuf", kafka_compression_type="zstd")
    async with running(create_app(settings)) as client:
        response = await client.post("/v1/events/attempts", json=attempt(user_id="pb-user", quality=5))
        assert response.status_code == 202

    for topic in (settings.kafka_topic_attempts, settings.kafka_topic_ml_training):
        (record,) = read_topic(settings.kafka_brokers, topic, expected=1)
        assert record.headers["content_type"].startswith(b"application/x-protobuf")
        message = events_pb2.Event.FromString(record.value)
        assert message.event_id == response.json()["event_id"]
        assert message.user_id == "pb-user"
        assert message.WhichOneof("payload") == "attempt"
        assert message.attempt.quality == 5
        assert message.occurred_at.ToJsonString() == ATTEMPT_TIME_UTC


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
async def test_every_compression_type_round_trips(make_settings: SettingsFactory, compression: str) -> None:
    settings = make_settings(kafka_compression_type=compression)
    async with running(create_app(settings)) as client:
        response = await client.post("/v1/events/activities", json=activity_event(activity_type=compression))
        assert response.status_code == 202

    (record,) = read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=1)
    assert orjson.loads(record.value)["activity_type"] == compression
