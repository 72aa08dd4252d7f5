"""The audit trail: every admin change recorded with who, what, before and after; paged and filtered
through /admin/audit; never a secret; on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from app.factory import create_app
from tests.conftest import SettingsFactory, running

pytestmark = pytest.mark.integration

ADMIN_KEY = "audit-admin-key-0123456789"
METRICS_KEY = "audit-metrics-key-0123456789"


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "X-Request-ID": f"req-{key[:5]}"}


async def test_every_admin_change_is_recorded_with_who_what_before_and_after(
    make_settings: SettingsFactory, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        database_url=database_url,
        auth_enabled=True,
        kafka_allowed_topics="analytics.audited",
        api_keys=[
            {"name": "ops", "key": ADMIN_KEY, "scopes": ["admin"]},
            {"name": "grafana", "key": METRICS_KEY, "scopes": ["metrics"]},
        ],
    )
    rule: dict[str, Any] = {"id": "audited", "name": "Audited", "event_types": ["activity"],
                            "topics": ["analytics.audited"]}  # fmt: skip
    admin = _as(ADMIN_KEY)
    with caplog.at_level(logging.INFO, logger="app.audit"):
        async with running(create_app(settings)) as client:
            assert (await client.post("/admin/routing-rules", json=rule, headers=admin)).status_code == 201
            patched = await client.patch("/admin/routing-rules/audited", json={"priority": 7}, headers=admin)
            assert patched.status_code == 200
            refused = await client.patch(
                "/admin/routing-rules/audited", json={"priority": "x"}, headers=admin
            )
            assert refused.status_code == 422  # a refused change is no change: not recorded
            assert (await client.delete("/admin/routing-rules/audited", headers=admin)).status_code == 204
            created = await client.post(
                "/admin/api-keys", json={"name": "web", "scopes": ["ingest"]}, headers=admin
            )
            secret, key_id = created.json()["key"], created.json()["id"]
            assert (await client.delete(f"/admin/api-keys/{key_id}", headers=admin)).status_code == 200
            assert (await client.post("/admin/publisher/pause", headers=admin)).status_code == 200
            assert (await client.post("/admin/publisher/resume", headers=admin)).status_code == 200
            replay = {"reason": "nothing-matches-this", "max_records": 10}
            assert (await client.post("/admin/dlq/replay", json=replay, headers=admin)).status_code == 200
            dry = {**replay, "dry_run": True}
            assert (await client.post("/admin/dlq/replay", json=dry, headers=admin)).status_code == 200

            everything = (await client.get("/admin/audit", headers=admin)).json()
            rules_only = (await client.get("/admin/audit?action=routing_rule", headers=admin)).json()
            first_page = (await client.get("/admin/audit?limit=3", headers=admin)).json()
            second_page = (await client.get(f"/admin/audit?limit=3&before_id={first_page['next_before_id']}",
                                            headers=admin)).json()  # fmt: skip
            by_target = (await client.get(f"/admin/audit?target={key_id}", headers=admin)).json()
            not_admin = await client.get("/admin/audit", headers=_as(METRICS_KEY))
            no_key = await client.get("/admin/audit")

    entries = everything["entries"]
    assert [entry["action"] for entry in entries] == [
        "dlq.replay",
        "publisher.resume",
        "publisher.pause",
        "api_key.revoke",
        "api_key.create",
        "routing_rule.delete",
        "routing_rule.update",
        "routing_rule.create",
    ]  # newest first; the dry run and the refused patch left nothing
    assert {(entry["key_id"], entry["key_name"]) for entry in entries} == {(entries[0]["key_id"], "ops")}
    assert all(entry["request_id"] == "req-audit" for entry in entries)
    update = entries[6]
    assert (update["target"], update["before"]["priority"], update["after"]["priority"]) == (
        "audited",
        100,
        7,
    )
    assert entries[7]["before"] is None
    assert entries[7]["after"]["topics"] == ["analytics.audited"]
    assert entries[5]["before"]["priority"] == 7
    assert entries[5]["after"] is None
    assert entries[4]["target"] == key_id
    assert entries[4]["after"]["scopes"] == ["ingest"]
    assert entries[3]["before"]["revoked_at"] is None
    assert entries[3]["after"]["revoked_at"] is not None
    assert (entries[2]["before"], entries[2]["after"]) == ({"paused": False}, {"paused": True})
    assert entries[0]["after"]["request"]["reason"] == "nothing-matches-this"
    assert secret not in orjson.dumps(everything).decode()  # keys by id and name only
    assert ADMIN_KEY not in orjson.dumps(everything).decode()

    assert [entry["action"] for entry in rules_only["entries"]] == [
        "routing_rule.delete",
        "routing_rule.update",
        "routing_rule.create",
    ]
    assert [e["id"] for e in first_page["entries"] + second_page["entries"]] == [e["id"] for e in entries[:6]]
    assert [entry["action"] for entry in by_target["entries"]] == ["api_key.revoke", "api_key.create"]
    assert not_admin.status_code == 403
    assert no_key.status_code == 401

    logged = [record for record in caplog.records if record.getMessage() == "admin change"]
    assert [record.__dict__["audit_action"] for record in logged][::-1] == [e["action"] for e in entries]
    assert all(secret not in str(record.__dict__) for record in logged)
