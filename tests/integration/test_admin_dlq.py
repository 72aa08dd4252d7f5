"""Dead letters: peek, filtered replay, and a replay killed midway that loses and skips nothing."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from app.devbroker import free_port
from app.factory import create_app
from app.publishing.topic_admin import KafkaAdmin
from tests.conftest import SettingsFactory, activity_event, running, topic_settings
from tests.integration.test_service_process import _env, _start, _stop, _wait_ready
from tests.kafka_helpers import create_topics, read_topic

pytestmark = pytest.mark.integration


async def test_peek_and_replay_dead_letters(make_settings: SettingsFactory) -> None:
    settings = make_settings(kafka_message_max_bytes=2000)
    async with running(create_app(settings)) as client:
        refused = [
            await client.post(
                "/v1/events/activities", json=activity_event(user_id=f"d{n}", properties={"blob": "x" * 3000})
            )
            for n in range(3)
        ]
        assert {answer.status_code for answer in refused} == {422}
        peeked = (await client.get("/admin/dlq?limit=10")).json()
        dry = (await client.post("/admin/dlq/replay", json={"dry_run": True, "reason": "too_large"})).json()
        nothing = (await client.post("/admin/dlq/replay", json={"event_type": "attempt"})).json()
        done = (await client.post("/admin/dlq/replay", json={"reason": "MSG_SIZE"})).json()
        again = (await client.post("/admin/dlq/replay", json={"reason": "MSG_SIZE"})).json()

    assert len(peeked["records"]) == 3
    first = peeked["records"][0]
    assert first["original_topic"] == settings.kafka_topic_activities
    assert first["dlq_reason"].startswith("MSG_SIZE_TOO_LARGE")
    assert first["event_id"] in {answer.json()["event_id"] for answer in refused}
    assert (dry["matched"], dry["replayed"], dry["dry_run"]) == (3, 0, True)
    assert (nothing["scanned"], nothing["matched"], nothing["replayed"]) == (3, 0, 0)
    assert (done["matched"], done["replayed"], done["complete"]) == (3, 3, True)
    assert (again["scanned"], again["replayed"]) == (0, 0)  # its group committed past them
    records = read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=3)
    assert {record.headers["event_id"].decode() for record in records} == {
        a.json()["event_id"] for a in refused
    }
    assert all("dlq_reason" not in record.headers for record in records)


def _fill_dlq(bootstrap: str, dlq: str, original: str, count: int) -> list[str]:
    create_topics(bootstrap, [dlq, original])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    ids = []
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    for n in range(count):
        event_id = str(uuid.uuid4())
        ids.append(event_id)
        producer.produce(
            dlq,
            key=f"user-{n % 50}".encode(),
            value=b'{"n": %d}' % n,
            headers=[
                ("event_id", event_id),
                ("event_type", "activity"),
                ("dlq_reason", "test outage"),
                ("dlq_timestamp", stamp),
                ("original_topic", original),
                ("dlq_attempts", "1"),
            ],
        )
    producer.flush(30)
    return ids


def test_a_replay_killed_midway_resumes_without_loss(
    kafka_bootstrap: str, tmp_path: Path, sqlite_url: str
) -> None:
    topics = {key.upper(): value for key, value in topic_settings(f"replay{uuid.uuid4().hex[:6]}").items()}
    ids = _fill_dlq(kafka_bootstrap, topics["KAFKA_TOPIC_DLQ"], topics["KAFKA_TOPIC_ACTIVITIES"], 3000)
    group = f"replay-{uuid.uuid4().hex[:6]}"
    window = 10
    port = free_port()
    env = _env(KAFKA_BROKERS=kafka_bootstrap, PORT=str(port), DATABASE_URL=sqlite_url,
               DLQ_REPLAY_WINDOW=str(window), **topics)  # fmt: skip

    process = _start(env, tmp_path / "first.log")
    try:
        _wait_ready(port, process, tmp_path / "first.log")

        def replay() -> None:
            with contextlib.suppress(httpx.TransportError):  # killed mid-request, as intended
                httpx.post(f"http://127.0.0.1:{port}/admin/dlq/replay", json={"group": group}, timeout=60)

        caller = threading.Thread(target=replay)
        caller.start()
        admin = KafkaAdmin({"bootstrap.servers": kafka_bootstrap})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(admin.committed(group).values()) < 300:
            time.sleep(0.05)
        process.kill()  # SIGKILL mid-replay
        process.wait(timeout=10)
        caller.join(timeout=30)
        committed_at_kill = sum(admin.committed(group).values())
    finally:
        _stop(process)
    assert 0 < committed_at_kill < 3000, "the replay should have been cut midway"

    process = _start(env, tmp_path / "second.log")
    try:
        _wait_ready(port, process, tmp_path / "second.log")
        answer = httpx.post(
            f"http://127.0.0.1:{port}/admin/dlq/replay", json={"group": group}, timeout=90
        ).json()
    finally:
        assert _stop(process) == 0
    assert answer["complete"] is True
    records = read_topic(kafka_bootstrap, topics["KAFKA_TOPIC_ACTIVITIES"], expected=3000, timeout=60)
    seen = Counter(record.headers["event_id"].decode() for record in records)
    assert set(seen) == set(ids)  # nothing lost
    duplicates = sum(count - 1 for count in seen.values())
    print(f"\n[replay] committed at kill={committed_at_kill} duplicates={duplicates}")
    assert duplicates <= window * 4  # at most the unacknowledged window of each partition
