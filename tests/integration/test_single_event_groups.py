"""Concurrent single-event requests are published together (`SingleEventGroups`) and each is
still answered as if alone: its own event id, status and trace context on its record, a key
seen before in the same group a duplicate, and one record per accepted event; with each
idempotency store, the database one on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from app.config.settings import Settings
from app.factory import create_app
from app.ingest.single_events import AckLevel, WaitingEvent
from app.runtime import Runtime
from tests.conftest import SettingsFactory, activity_event, attempt, running
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration


def _traceparent(n: int) -> str:
    return f"00-{n + 1:032x}-{n + 1:016x}-01"


@pytest.mark.parametrize(
    ("store", "database_fixture"),
    [
        ("memory", "sqlite_url"),
        ("host", "sqlite_url"),
        ("database", "sqlite_url"),
        ("database", "postgres_url"),
    ],
    ids=["memory", "host", "database-sqlite", "database-postgresql"],
)
async def test_concurrent_single_events_are_published_together_and_answered_each_alone(
    make_settings: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    store: str,
    database_fixture: str,
) -> None:
    settings: Settings = make_settings(
        idempotency_store=store,
        database_url=request.getfixturevalue(database_fixture),
        data_dir=tmp_path / "data",
    )
    app = create_app(settings)
    async with running(app) as client:
        runtime: Runtime = app.state.runtime
        sizes: list[int] = []
        publish_group = runtime.ingest._ingest_group

        async def counted(waiting: list[WaitingEvent], ack: AckLevel) -> object:
            sizes.append(len(waiting))
            return await publish_group(waiting, ack)

        monkeypatch.setattr(runtime.ingest.single_events, "_publish", counted)
        same_attempt = attempt(client_attempt_id="same-in-the-group")
        requests = [
            *(
                client.post(
                    "/v1/events/activities",
                    json=activity_event(user_id=f"u{n}"),
                    headers={"traceparent": _traceparent(n)},
                )
                for n in range(8)
            ),
            *(client.post("/v1/events/attempts", json=same_attempt) for _ in range(3)),
            *(
                client.post("/v1/events/activities", json=activity_event(), headers={"Idempotency-Key": "k"})
                for _ in range(2)
            ),
        ]
        answers: list[httpx.Response] = await asyncio.gather(*requests)

    activities, attempts, keyed = answers[:8], answers[8:11], answers[11:]
    assert max(sizes) > 1  # published together
    assert [answer.status_code for answer in activities] == [202] * 8
    assert sorted(answer.status_code for answer in attempts) == [200, 200, 202]
    assert len({answer.json()["event_id"] for answer in attempts}) == 1  # the duplicates name the first
    assert sorted(answer.status_code for answer in keyed) == [200, 202]
    assert len({answer.json()["event_id"] for answer in keyed}) == 1

    records = read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=9)
    by_id = {record.headers["event_id"].decode(): record for record in records}
    assert len(records) == len(by_id) == 9  # eight, and the keyed one once
    for n, answer in enumerate(activities):
        assert by_id[answer.json()["event_id"]].headers["traceparent"] == _traceparent(n).encode()
    assert len(read_topic(settings.kafka_brokers, settings.kafka_topic_attempts, expected=1)) == 1
