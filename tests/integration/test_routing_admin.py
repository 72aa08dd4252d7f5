"""Routing rules changed at runtime through /admin/routing-rules, against the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from app.factory import create_app
from tests.conftest import SettingsFactory, activity_event, attempt, running, session_event
from tests.kafka_helpers import read_topic
from tests.services.brokers import Broker
from tests.traffic import wait_until_spool_empty

pytestmark = pytest.mark.integration


def _rule(**fields: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": "videos",
        "name": "Videos watched",
        "event_types": ["activity"],
        "condition": {"field": "activity_type", "op": "==", "value": "video_watched"},
        "topics": ["analytics.videos"],
        "priority": 60,
    }
    rule.update(fields)
    return rule


async def test_rule_crud_takes_effect_without_restart(make_settings: SettingsFactory) -> None:
    settings = make_settings(kafka_allowed_topics="analytics.videos")
    async with running(create_app(settings)) as client:
        listed = (await client.get("/admin/routing-rules")).json()
        assert [rule["id"] for rule in listed["rules"]][:2] == [
            "ml-training-high-quality-attempts",
            "all-attempts",
        ]
        version = listed["version"]

        created = await client.post("/admin/routing-rules", json=_rule())
        assert created.status_code == 201, created.text
        assert (await client.post("/admin/routing-rules", json=_rule())).status_code == 409
        video = activity_event(activity_type="video_watched")
        routed = await client.post("/v1/events/activities", json=video)
        assert routed.json()["topics"] == [settings.kafka_topic_activities, "analytics.videos"]

        patched = await client.patch("/admin/routing-rules/videos", json={"enabled": False})
        assert patched.json()["enabled"] is False
        assert (await client.post("/v1/events/activities", json=video)).json()["topics"] == [
            settings.kafka_topic_activities
        ]

        assert (await client.delete("/admin/routing-rules/videos")).status_code == 204
        assert (await client.get("/admin/routing-rules/videos")).status_code == 404
        assert (await client.delete("/admin/routing-rules/videos")).status_code == 404
        assert (await client.get("/admin/routing-rules")).json()["version"] == version + 3


async def test_a_forbidden_topic_or_unknown_variable_is_refused_with_422(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(kafka_topic_pattern=r"${env}\.learning\.${eventType}\.[a-z_]+")
    async with running(create_app(settings)) as client:
        forbidden = await client.post("/admin/routing-rules", json=_rule(topics=["random.topic"]))
        by_pattern = await client.post(
            "/admin/routing-rules", json=_rule(topics=["dev.learning.activity.videos"])
        )
        wrong_type = await client.post(
            "/admin/routing-rules", json=_rule(id="x", topics=["dev.learning.attempt.x"])
        )
        unknown = await client.post(
            "/admin/routing-rules", json=_rule(id="y", message_template={"who": "{no_such_field}"})
        )
        listed = (await client.get("/admin/routing-rules")).json()

    assert forbidden.status_code == 422
    assert "random.topic" in forbidden.text
    assert "KAFKA_ALLOWED_TOPICS" in forbidden.text
    assert by_pattern.status_code == 201
    assert wrong_type.status_code == 422
    assert unknown.status_code == 422
    assert "no_such_field" in unknown.text
    assert "random.topic" not in orjson.dumps(listed).decode()


async def test_a_rule_naming_a_missing_topic_creates_it_or_is_refused_with_422(
    make_settings: SettingsFactory,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    created_topic, absent_topic = f"analytics.created_{suffix}", f"analytics.absent_{suffix}"
    settings = make_settings(kafka_allowed_topics=f"{created_topic},{absent_topic}", kafka_topic_partitions=3)
    admin = AdminClient({"bootstrap.servers": settings.kafka_brokers})
    async with running(create_app(settings)) as client:
        created = await client.post("/admin/routing-rules", json=_rule(id="creates", topics=[created_topic]))
        routed = await client.post(
            "/v1/events/activities", json=activity_event(activity_type="video_watched")
        )
        empty = await client.post("/admin/routing-rules", json=_rule(id="empty", message_template={}))
    assert created.status_code == 201, created.text
    topic = admin.list_topics(timeout=10).topics[created_topic]
    assert len(topic.partitions) == 3  # the service's partitions, as for its own topics
    assert created_topic in routed.json()["topics"]
    assert len(read_topic(settings.kafka_brokers, created_topic, expected=1)) == 1
    assert empty.status_code == 422
    assert "message_template maps no field" in empty.text

    no_creation = make_settings(
        kafka_allowed_topics=f"{created_topic},{absent_topic}", kafka_create_topics=False
    )
    async with running(create_app(no_creation)) as client:
        refused = await client.post("/admin/routing-rules", json=_rule(id="absent", topics=[absent_topic]))
        existing = await client.post(
            "/admin/routing-rules", json=_rule(id="existing", topics=[created_topic])
        )
        listed = [rule["id"] for rule in (await client.get("/admin/routing-rules")).json()["rules"]]
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["field"] == "topics"
    assert f"topic(s) {absent_topic} do not exist, and KAFKA_CREATE_TOPICS is false" in refused.text
    assert existing.status_code == 201
    assert "absent" not in listed
    assert absent_topic not in admin.list_topics(timeout=10).topics


async def test_the_test_route_explains_a_match_without_publishing(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    async with running(create_app(settings)) as client:
        answer = await client.post(
            "/admin/routing-rules/test", json={"event": {"event_type": "attempt", **attempt(quality=5)}}
        )
        metrics = (await client.get("/metrics/publisher")).json()

    assert answer.status_code == 200
    body = answer.json()
    assert body["matched_rules"] == ["ml-training-high-quality-attempts", "all-attempts"]
    assert body["topics"] == [settings.kafka_topic_ml_training, settings.kafka_topic_attempts]
    assert body["records"][0]["key"] == "user-1"
    assert body["records"][0]["message"]["quality"] == 5
    assert metrics["events_published"] == 0


async def test_templates_reshape_the_record_and_change_the_key(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    async with running(create_app(settings)) as client:
        rule = {
            "id": "sessions-with-items",
            "name": "Sessions, keyed by session, reshaped",
            "event_types": ["session"],
            "condition": {"field": "items_attempted", "op": ">", "value": 0},
            "topics": [settings.kafka_topic_sessions],
            "priority": 30,
            "key_template": "{session_id}",
            "message_template": {"kind": "{event_type}", "learner": "{user_id}", "score": "{items_correct}"},
        }
        assert (await client.put("/admin/routing-rules/sessions-with-items", json=rule)).status_code == 200
        response = await client.post("/v1/events/sessions", json=session_event(session_id="s-77"))
        assert response.status_code == 202

    (record,) = read_topic(settings.kafka_brokers, settings.kafka_topic_sessions, expected=1)
    assert record.key == b"s-77"
    assert orjson.loads(record.value) == {"kind": "session", "learner": "user-1", "score": 2}
    assert record.headers["event_id"].decode() == response.json()["event_id"]
    assert record.headers["content_type"] == b"application/json"


async def test_a_change_reaches_another_worker_within_the_poll_interval(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(kafka_allowed_topics="analytics.videos", routing_rules_poll_interval="200ms")
    async with running(create_app(settings)) as first, running(create_app(settings)) as second:
        assert (await first.post("/admin/routing-rules", json=_rule())).status_code == 201
        deadline = time.monotonic() + 5
        ids: list[str] = []
        while time.monotonic() < deadline and "videos" not in ids:
            ids = [rule["id"] for rule in (await second.get("/admin/routing-rules")).json()["rules"]]
            await asyncio.sleep(0.1)
        assert "videos" in ids
        routed = await second.post(
            "/v1/events/activities", json=activity_event(activity_type="video_watched")
        )
        assert "analytics.videos" in routed.json()["topics"]


async def test_pause_spools_and_resume_drains_with_counts(make_settings: SettingsFactory) -> None:
    settings = make_settings(spool_relay_interval="100ms")
    async with running(create_app(settings)) as client:
        paused = await client.post("/admin/publisher/pause")
        assert paused.json() == {"paused": True, "spool_depth": 0}
        answers = [
            await client.post("/v1/events/activities", json=activity_event(user_id=f"p{n}")) for n in range(5)
        ]
        assert {answer.json()["status"] for answer in answers} == {"spooled"}
        await asyncio.sleep(0.5)  # the relay holds while paused
        metrics = (await client.get("/metrics/publisher")).json()
        assert metrics["paused"] is True
        assert metrics["spool"]["depth"] == 5
        health = (await client.get("/metrics/publisher/health")).json()
        assert {c["name"]: c["status"] for c in health["checks"]}["publisher_paused"] == "warn"

        resumed = await client.post("/admin/publisher/resume")
        assert resumed.json()["paused"] is False
        metrics = await wait_until_spool_empty(client, within=30)
        assert metrics["records_relayed"] == 5

    records = read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=5)
    assert {record.headers["event_id"].decode() for record in records} == {
        a.json()["event_id"] for a in answers
    }


async def test_a_rule_can_be_disabled_while_kafka_is_down_but_not_pointed_at_a_new_topic(
    make_settings: SettingsFactory, dev_broker: Broker
) -> None:
    settings = make_settings(
        kafka_brokers=dev_broker.bootstrap, kafka_allowed_topics="analytics.during_outage"
    )
    async with running(create_app(settings)) as client:
        dev_broker.pause()
        try:
            disabled = await client.patch("/admin/routing-rules/all-activities", json={"enabled": False})
            new_topic = await client.post(
                "/admin/routing-rules", json=_rule(id="outage", topics=["analytics.during_outage"])
            )
            listed = [rule["id"] for rule in (await client.get("/admin/routing-rules")).json()["rules"]]
        finally:
            dev_broker.resume()
    assert disabled.status_code == 200  # its topics are known: Kafka is not asked
    assert disabled.json()["enabled"] is False
    assert new_topic.status_code == 503  # a new topic must be checked or created: nothing saved
    assert "Kafka did not answer" in new_topic.json()["detail"]
    assert "outage" not in listed
