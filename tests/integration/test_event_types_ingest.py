"""Event types as data, end to end: a registered type's events are validated by its schema, routed
by a rule, keyed by its partition key, de-duplicated by its identity fields and read back from the
broker with their headers; single and batch; on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from app.factory import create_app
from ingest_client import AsyncEventClient, PublishStatus
from tests.conftest import SettingsFactory, at, running
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "workflow_id": {"type": "string", "maxLength": 128},
        "task_id": {"type": "string", "maxLength": 128},
        "duration_ms": {"type": "integer", "minimum": 0},
    },
    "required": ["workflow_id", "task_id"],
    "additionalProperties": False,
}


def _event(**fields: Any) -> dict[str, Any]:
    return {"user_id": "learner-1", "occurred_at": at(), "workflow_id": "wf-1", "task_id": "t-1", **fields}


async def test_a_registered_type_is_validated_routed_keyed_and_deduplicated(
    make_settings: SettingsFactory, database_url: str
) -> None:
    topic = f"workflow.tasks.{uuid.uuid4().hex[:8]}"
    settings = make_settings(database_url=database_url, kafka_allowed_topics=topic)
    definition = {
        "name": "workflow.task_completed",
        "owner": "workflow-team",
        "schema": SCHEMA,
        "partition_key": "workflow_id",
        "idempotency_fields": ["workflow_id", "task_id"],
    }
    rule = {
        "id": "workflow-tasks",
        "name": "Finished workflow tasks",
        "event_types": ["workflow.task_completed"],
        "condition": {"field": "duration_ms", "op": ">=", "value": 0},
        "topics": [topic],
        "key_template": "{workflow_id}",
    }
    async with running(create_app(settings)) as client:
        unknown_rule = {**rule, "id": "nope", "event_types": ["workflow.not_registered"]}
        refused_rule = await client.post("/admin/routing-rules", json=unknown_rule)
        assert refused_rule.status_code == 422
        assert "workflow.not_registered" in refused_rule.text
        assert (await client.post("/admin/event-types", json=definition)).status_code == 201
        assert (await client.post("/admin/routing-rules", json=rule)).status_code == 201, rule

        first = await client.post("/v1/events/workflow.task_completed", json=_event(duration_ms=5))
        assert first.status_code == 202, first.text
        assert first.json()["status"] == "accepted"
        assert first.json()["topics"] == [topic]
        repeat = await client.post("/v1/events/workflow.task_completed", json=_event(duration_ms=6))
        assert repeat.status_code == 200
        assert repeat.json()["status"] == "duplicate"
        assert repeat.json()["event_id"] == first.json()["event_id"]

        invalid = await client.post(
            "/v1/events/workflow.task_completed", json=_event(task_id=7, user_id="", colour="red")
        )
        assert invalid.status_code == 422
        assert {e["field"] for e in invalid.json()["detail"]} == {"task_id", "user_id", "(body)"}
        assert (await client.post("/v1/events/workflow.nothing", json=_event())).status_code == 404

        # A compatible new version: events say which version checked them.
        evolved = {**SCHEMA, "properties": {**SCHEMA["properties"], "outcome": {"enum": ["ok", "failed"]}}}
        assert (
            await client.put("/admin/event-types/workflow.task_completed/schema", json=evolved)
        ).status_code == 200
        second = await client.post(
            "/v1/events/workflow.task_completed", json=_event(task_id="t-2", duration_ms=1, outcome="ok")
        )
        assert second.status_code == 202, second.text
        old_version = await client.post(
            "/v1/events/workflow.task_completed", json=_event(task_id="t-3", duration_ms=2, schema_version=1)
        )
        assert old_version.status_code == 202, old_version.text

        batch = {
            "events": [
                {"event_type": "workflow.task_completed", **_event(task_id="t-4", duration_ms=3)},
                {"event_type": "workflow.task_completed", **_event(task_id="t-5", duration_ms="slow")},
                {"event_type": "workflow.unknown", **_event()},
            ]
        }
        answer = await client.post("/v1/events/batch", json=batch)
        assert answer.status_code == 207, answer.text
        assert [item["status"] for item in answer.json()["results"]] == ["accepted", "rejected", "rejected"]
        assert answer.json()["results"][1]["errors"][0]["field"] == "duration_ms"
        assert answer.json()["results"][2]["errors"][0]["field"] == "event_type"

        spooled = await client.post(
            "/v1/events/workflow.task_completed?ack=spool", json=_event(task_id="t-6", duration_ms=4)
        )
        assert spooled.status_code == 202, spooled.text
        assert spooled.json()["status"] == "spooled"  # the relay delivers it like any record
        # (last: later events of the same key would follow it through the spool, to keep their order)

        disabled = await client.patch("/admin/event-types/workflow.task_completed", json={"enabled": False})
        assert disabled.status_code == 200
        gone = await client.post("/v1/events/workflow.task_completed", json=_event(task_id="t-9"))
        assert gone.status_code == 410
        scraped = (await client.get("/metrics/prometheus")).text
        assert (
            'event_ingest_events_total{event_type="workflow.task_completed",status="accepted"} 4.0' in scraped
        )
        assert (
            'event_ingest_events_total{event_type="workflow.task_completed",status="spooled"} 1.0' in scraped
        )
        assert (
            'event_ingest_events_total{event_type="workflow.task_completed",status="duplicate"} 1.0'
            in scraped
        )

    records = read_topic(settings.kafka_brokers, topic, expected=5)
    assert len(records) == 5  # the duplicate, the invalid ones and the disabled type's are not there
    by_task = {orjson.loads(record.value)["task_id"]: record for record in records}
    assert set(by_task) == {"t-1", "t-2", "t-3", "t-4", "t-6"}
    assert {record.key for record in records} == {b"wf-1"}
    assert by_task["t-1"].headers["event_type"] == b"workflow.task_completed"
    assert by_task["t-1"].headers["schema_version"] == b"1"
    assert by_task["t-2"].headers["schema_version"] == b"2"
    assert by_task["t-3"].headers["schema_version"] == b"1"
    assert by_task["t-1"].headers["content_type"] == b"application/json"
    value = orjson.loads(by_task["t-2"].value)
    assert value["outcome"] == "ok"
    assert value["user_id"] == "learner-1"
    assert value["event_type"] == "workflow.task_completed"


async def test_the_python_client_publishes_registered_types_by_name(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"workflow.tasks.{uuid.uuid4().hex[:8]}"
    settings = make_settings(kafka_allowed_topics=topic)
    app = create_app(settings)
    definition = {"name": "workflow.task_completed", "owner": "workflow-team", "schema": SCHEMA,
                  "partition_key": "workflow_id"}  # fmt: skip
    rule = {"id": "tasks", "name": "tasks", "event_types": ["workflow.task_completed"], "topics": [topic]}
    async with running(app) as admin:
        assert (await admin.post("/admin/event-types", json=definition)).status_code == 201
        assert (await admin.post("/admin/routing-rules", json=rule)).status_code == 201
        transport = httpx.ASGITransport(app=app)
        async with AsyncEventClient("http://127.0.0.1", transport=transport) as client:
            result = await client.publish("workflow.task_completed", _event(duration_ms=3))
            assert result.status is PublishStatus.ACCEPTED, result
            assert result.topics == [topic]
            refused = await client.publish_event("workflow.task_completed", _event(task_id=["not", "text"]))
            assert refused is False
            envelope_refused = await client.publish_event("workflow.task_completed", _event(user_id=""))
            assert envelope_refused is False  # the client checks the envelope before sending
            many = await client.publish_many(
                [
                    {"event_type": "workflow.task_completed", **_event(task_id="t-2")},
                    {"event_type": "workflow.task_completed", **_event(task_id=5)},
                ]
            )
            assert [r.status for r in many] == [PublishStatus.ACCEPTED, PublishStatus.REJECTED]
    assert "refused (422)" in caplog.text
    records = read_topic(settings.kafka_brokers, topic, expected=2)
    assert sorted(orjson.loads(r.value)["task_id"] for r in records) == ["t-1", "t-2"]


async def test_api_keys_limited_by_type_name_or_prefix(make_settings: SettingsFactory) -> None:
    admin_key, workflow_key, attempts_key = (
        "types-admin-0123456789",
        "types-wf-0123456789",
        "types-at-0123456789",
    )
    settings = make_settings(
        auth_enabled=True,
        api_keys=[
            {"name": "ops", "key": admin_key, "scopes": ["admin"]},
            {"name": "workflows", "key": workflow_key, "scopes": ["ingest"], "event_types": ["workflow.*"]},
            {"name": "tutor", "key": attempts_key, "scopes": ["ingest"], "event_types": ["attempt"]},
        ],
    )
    definition = {"name": "workflow.task_completed", "owner": "workflow-team", "schema": SCHEMA}
    async with running(create_app(settings)) as client:
        admin = {"Authorization": f"Bearer {admin_key}"}
        assert (await client.post("/admin/event-types", json=definition, headers=admin)).status_code == 201
        url = "/v1/events/workflow.task_completed"
        allowed = await client.post(url, json=_event(), headers={"Authorization": f"Bearer {workflow_key}"})
        assert allowed.status_code == 202, allowed.text  # unrouted, but taken
        refused = await client.post(url, json=_event(), headers={"Authorization": f"Bearer {attempts_key}"})
        assert refused.status_code == 403
        batch = {"events": [{"event_type": "workflow.task_completed", **_event(task_id="t-2")}]}
        items = await client.post(
            "/v1/events/batch", json=batch, headers={"Authorization": f"Bearer {attempts_key}"}
        )
        assert items.json()["results"][0]["status_code"] == 403
        bad_limit = await client.post(
            "/admin/api-keys",
            json={"name": "x", "scopes": ["ingest"], "event_types": ["Work*"]},
            headers=admin,
        )
        assert bad_limit.status_code == 422
        prefixed = await client.post(
            "/admin/api-keys",
            json={"name": "y", "scopes": ["ingest"], "event_types": ["training.*"]},
            headers=admin,
        )
        assert prefixed.status_code == 201, prefixed.text


async def test_a_registered_types_record_kafka_refuses_is_dead_lettered_and_replayed(
    make_settings: SettingsFactory,
) -> None:
    """Too large for the first app's producer: dead-lettered with the type's headers; replayed by an
    app allowed larger records, filtered by the type's name."""
    topic = f"workflow.tasks.{uuid.uuid4().hex[:8]}"
    small = make_settings(kafka_allowed_topics=topic, kafka_message_max_bytes=2000)
    definition = {"name": "workflow.task_completed", "owner": "workflow-team",
                  "schema": {**SCHEMA, "properties": {**SCHEMA["properties"], "log": {"type": "string"}}}}  # fmt: skip
    rule = {"id": "tasks", "name": "tasks", "event_types": ["workflow.task_completed"], "topics": [topic]}
    async with running(create_app(small)) as client:
        assert (await client.post("/admin/event-types", json=definition)).status_code == 201
        assert (await client.post("/admin/routing-rules", json=rule)).status_code == 201
        refused = await client.post("/v1/events/workflow.task_completed", json=_event(log="x" * 5000))
    assert refused.status_code == 422, refused.text
    assert refused.json()["dead_lettered"] is True
    (dead,) = read_topic(small.kafka_brokers, small.kafka_topic_dlq, expected=1)
    assert dead.headers["event_type"] == b"workflow.task_completed"
    assert dead.key == b"learner-1"

    larger = small.model_copy(update={"kafka_message_max_bytes": 1_000_000})
    async with running(create_app(larger)) as client:
        replay = {"event_type": "workflow.task_completed", "max_records": 10}
        answer = await client.post("/admin/dlq/replay", json=replay)
        assert answer.status_code == 200, answer.text
        assert answer.json()["replayed"] == 1
    (record,) = read_topic(small.kafka_brokers, topic, expected=1)
    assert record.headers["event_id"].decode() == refused.json()["event_id"]
    assert orjson.loads(record.value)["log"] == "x" * 5000
