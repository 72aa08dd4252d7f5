"""Event types as data, the registry half: register, list, evolve under the compatibility mode,
switch, validate a sample; on SQLite and PostgreSQL; shared by every app on the same database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from app.event_types.seed import load_event_type_files
from app.factory import create_app
from tests.conftest import SettingsFactory, at, running

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

ADMIN_KEY = "types-admin-key-0123456789"
INGEST_KEY = "types-ingest-key-0123456789"

TASK_COMPLETED: dict[str, Any] = {
    "name": "workflow.task_completed",
    "description": "A workflow task finished.",
    "owner": "workflow-team",
    "schema": {
        "type": "object",
        "properties": {
            "workflow_id": {"type": "string", "maxLength": 128},
            "task_id": {"type": "string", "maxLength": 128},
            "state": {"enum": ["ok", "failed"]},
        },
        "required": ["workflow_id", "task_id"],
        "additionalProperties": False,
    },
    "partition_key": "workflow_id",
    "idempotency_fields": ["workflow_id", "task_id"],
}


def _with_field(
    name: str, schema: dict[str, Any], *, required: bool = False, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    base = base or TASK_COMPLETED["schema"]
    return {
        **base,
        "properties": {**base["properties"], name: schema},
        "required": base["required"] + ([name] if required else []),
    }


async def test_register_evolve_switch_and_validate(make_settings: SettingsFactory, database_url: str) -> None:
    settings = make_settings(
        database_url=database_url,
        auth_enabled=True,
        routing_rules_poll_interval="200ms",
        api_keys=[
            {"name": "ops", "key": ADMIN_KEY, "scopes": ["admin"]},
            {"name": "producer", "key": INGEST_KEY, "scopes": ["ingest"]},
        ],
    )
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    producer = {"Authorization": f"Bearer {INGEST_KEY}"}
    async with running(create_app(settings)) as client, running(create_app(settings)) as other:
        created = await client.post("/admin/event-types", json=TASK_COMPLETED, headers=admin)
        assert created.status_code == 201, created.text
        assert created.json()["version"] == 1
        assert created.json()["versions"] == [1]
        again = await client.post("/admin/event-types", json=TASK_COMPLETED, headers=admin)
        assert again.status_code == 409

        # Producers see it (ingest scope), next to the built-in types with their generated schemas.
        listed = (await client.get("/v1/event-types", headers=producer)).json()["event_types"]
        names = {t["name"]: t for t in listed}
        assert {"attempt", "session", "placement", "activity", "workflow.task_completed"} <= set(names)
        assert names["attempt"]["builtin"] is True
        assert "item_id" in names["attempt"]["schema"]["properties"]
        assert "user_id" not in names["attempt"]["schema"]["properties"]  # the envelope is the service's
        assert (
            await client.post("/admin/event-types", json=TASK_COMPLETED, headers=producer)
        ).status_code == 403

        # A compatible change is a new version; an incompatible one is refused with each problem named.
        compatible = _with_field("duration_ms", {"type": "integer", "minimum": 0})
        evolved = await client.put(
            "/admin/event-types/workflow.task_completed/schema", json=compatible, headers=admin
        )
        assert evolved.status_code == 200, evolved.text
        assert evolved.json()["version"] == 2
        assert evolved.json()["versions"] == [1, 2]
        breaking = _with_field("attempts", {"type": "integer"}, required=True, base=compatible)
        refused = await client.put(
            "/admin/event-types/workflow.task_completed/schema", json=breaking, headers=admin
        )
        assert refused.status_code == 409
        assert refused.json()["code"] == "incompatible_schema"
        assert refused.json()["problems"] == ["required field `attempts` added without a default"]
        first = await client.get("/admin/event-types/workflow.task_completed/versions/1", headers=admin)
        assert first.json()["schema"] == TASK_COMPLETED["schema"]  # every version stays readable

        # A sample event is checked, envelope and schema together; nothing is published.
        sample = {"user_id": "u1", "occurred_at": at(), "workflow_id": "w1", "task_id": "t1"}
        valid = await client.post(
            "/admin/event-types/workflow.task_completed/validate", json=sample, headers=admin
        )
        assert valid.json() == {"valid": True, "schema_version": 2, "errors": []}
        bad = {"occurred_at": "yesterday", "workflow_id": 5, "task_id": "t1", "extra": 1}
        answer = (
            await client.post("/admin/event-types/workflow.task_completed/validate", json=bad, headers=admin)
        ).json()
        assert answer["valid"] is False
        assert {error["field"] for error in answer["errors"]} >= {
            "user_id",
            "occurred_at",
            "workflow_id",
            "(body)",
        }

        url_of_type = "/admin/event-types/workflow.task_completed"
        switched = await client.patch(url_of_type, json={"enabled": False}, headers=admin)
        assert switched.json()["enabled"] is False

        # The other app on the same database picks every change up within its poll interval.
        for _ in range(200):  # at most 20 s: the poll interval is 200 ms
            seen = (await other.get("/admin/event-types/workflow.task_completed", headers=admin)).json()
            if seen.get("version") == 2 and seen.get("enabled") is False:
                break
            await asyncio.sleep(0.1)
        assert seen["version"] == 2
        assert seen["enabled"] is False
        assert (await client.patch(url_of_type, json={"enabled": True}, headers=admin)).status_code == 200
        for _ in range(200):  # served by the other app once it has seen the type enabled again
            served = await other.post("/v1/events/workflow.task_completed", json=sample, headers=producer)
            if served.status_code != 410:
                break
            await asyncio.sleep(0.1)
        assert served.status_code == 202, served.text  # unrouted (no rule), but taken

        audit = (await client.get("/admin/audit?action=event_type.new_version", headers=admin)).json()
        assert [entry["target"] for entry in audit["entries"]] == ["workflow.task_completed"]


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"name": "attempt"}, 422, "pattern"),
        ({"name": "workflow"}, 422, "pattern"),
        ({"schema": {"type": "object", "properties": {"user_id": {"type": "string"}}}}, 422, "envelope"),
        (
            {"schema": {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:1/x.json"}}}},
            422,
            "#",
        ),
        ({"partition_key": "nowhere"}, 422, "partition_key"),
        ({"compatibility": "sideways"}, 422, "compatibility"),
    ],
)
async def test_bad_definitions_are_refused_and_change_nothing(
    make_settings: SettingsFactory, change: dict[str, Any], status: int, says: str
) -> None:
    async with running(create_app(make_settings())) as client:
        answer = await client.post("/admin/event-types", json={**TASK_COMPLETED, **change})
        assert answer.status_code == status, answer.text
        assert says in answer.text
        listed = (await client.get("/admin/event-types")).json()
        assert [t["name"] for t in listed["event_types"] if not t["builtin"]] == []
        assert (
            await client.put("/admin/event-types/attempt/schema", json={"type": "object"})
        ).status_code == 409
        assert (await client.get("/admin/event-types/no.such")).status_code == 404


async def test_the_shipped_event_type_files_seed_an_empty_registry_once(
    make_settings: SettingsFactory,
) -> None:
    """`make run`'s seeds: the workflow and training types with their rules, registered at the
    first start only (a second start, or a registry already written, leaves them be)."""
    files = f"{ROOT / 'event_types' / 'workflow.json'},{ROOT / 'event_types' / 'training.json'}"
    settings = make_settings(event_types_files=files, kafka_allowed_topics="workflow.events,training.events")
    async with running(create_app(settings)) as client:
        names = {t["name"] for t in (await client.get("/admin/event-types")).json()["event_types"]}
        assert {"workflow.triggered", "workflow.completed", "training.failed"} <= names
        rules = {r["id"] for r in (await client.get("/admin/routing-rules")).json()["rules"]}
        assert {"workflow-events", "training-events"} <= rules
        event = {
            "user_id": "airflow",
            "occurred_at": at(),
            "source": "airflow",
            "workflow_id": "example_dag",
            "workflow_run_id": "run_123",
            "payload": {"status": "success", "count": 100},
        }
        answer = await client.post("/v1/events/workflow.completed", json=event)
        assert answer.status_code == 202, answer.text
        assert answer.json()["topics"] == ["workflow.events"]
        changed = await client.patch("/admin/event-types/workflow.failed", json={"owner": "someone-else"})
        assert changed.status_code == 200
    async with running(create_app(settings)) as client:  # the same database, started again
        view = (await client.get("/admin/event-types/workflow.failed")).json()
        assert view["owner"] == "someone-else"  # not seeded over


def test_a_bad_event_type_file_is_named_at_start(make_settings: SettingsFactory, tmp_path: Path) -> None:
    bad = tmp_path / "types.json"
    bad.write_text('{"event_types": [{"name": "Bad Name", "owner": "x", "schema": {"type": "object"}}]}')
    with pytest.raises(ValueError, match=r"types\.json"):
        load_event_type_files([str(bad)])
    with pytest.raises(ValueError, match=r"missing\.json"):
        load_event_type_files([str(tmp_path / "missing.json")])


async def test_at_most_event_types_max_types(make_settings: SettingsFactory) -> None:
    async with running(create_app(make_settings(event_types_max=1))) as client:
        assert (await client.post("/admin/event-types", json=TASK_COMPLETED)).status_code == 201
        second = await client.post("/admin/event-types", json={**TASK_COMPLETED, "name": "workflow.other"})
        assert second.status_code == 422
        assert "EVENT_TYPES_MAX" in second.text
