"""The Python client and the `ingest` command against the running service and the real broker."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devbroker import free_port
from app.factory import create_app
from ingest_client import AsyncEventClient, PublishStatus
from tests.conftest import SettingsFactory, activity_event, at, attempt, topic_settings
from tests.integration.test_service_process import _env, _start, _stop, _wait_ready
from tests.kafka_helpers import read_topic
from tests.services.brokers import Broker
from tests.traffic import wait_until_spool_empty

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _activity(**fields: Any) -> dict[str, Any]:
    return {"event_type": "activity", **activity_event(**fields)}


async def test_async_client_publishes_singles_and_batches_and_reports_rejections(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(kafka_message_max_bytes=2000)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        AsyncEventClient("http://127.0.0.1", transport=transport) as client,
    ):
        single = await client.publish({"event_type": "attempt", **attempt(quality=5)})
        again = await client.publish({"event_type": "attempt", **attempt(quality=5, client_attempt_id="x1")})
        repeat = await client.publish({"event_type": "attempt", **attempt(quality=5, client_attempt_id="x1")})
        batch = await client.publish_many(
            [
                _activity(user_id="b1"),
                _activity(user_id="b2", properties={"blob": "x" * 3000}),
                _activity(),
            ]
        )
        for n in range(5):
            await client.enqueue(_activity(user_id=f"q{n}"))
        flushed = await client.flush()

    assert single.status is PublishStatus.ACCEPTED
    assert single.topics == [settings.kafka_topic_ml_training, settings.kafka_topic_attempts]
    assert again.ok
    assert repeat.status is PublishStatus.DUPLICATE
    assert repeat.event_id == again.event_id
    assert [result.status for result in batch] == [
        PublishStatus.ACCEPTED,
        PublishStatus.REJECTED,
        PublishStatus.ACCEPTED,
    ]
    assert batch[1].errors[0]["code"] == "record_rejected"
    assert batch[1].retriable is False
    assert [result.status for result in flushed] == [PublishStatus.ACCEPTED] * 5
    records = read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=7)
    assert len(records) == 7


async def test_client_through_a_paused_broker_publishes_each_event_once(
    make_settings: SettingsFactory, dev_broker: Broker
) -> None:
    settings = make_settings(kafka_brokers=dev_broker.bootstrap, kafka_producer_timeout="1s",
                             spool_relay_interval="200ms")  # fmt: skip
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncEventClient("http://127.0.0.1", transport=transport) as client:
            assert (await client.publish(_activity(user_id="warm"))).ok
            dev_broker.pause()
            try:
                results = await client.publish_many([_activity(user_id=f"p{n}") for n in range(20)])
            finally:
                dev_broker.resume()
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as plain:
                await wait_until_spool_empty(plain, within=60)

    assert all(result.ok for result in results)
    records = read_topic(dev_broker.bootstrap, settings.kafka_topic_activities, expected=21)
    seen = Counter(record.headers["event_id"].decode() for record in records)
    assert {result.event_id for result in results} <= set(seen)
    print(
        f"\n[client-pause] statuses={Counter(r.status.value for r in results)} duplicates={sum(seen.values()) - len(seen)}"
    )


def test_ingest_send_100k_with_progress_and_tail(
    kafka_bootstrap: str, tmp_path: Path, sqlite_url: str
) -> None:
    topics = {key.upper(): value for key, value in topic_settings(f"cli{free_port()}").items()}
    port = free_port()
    events = tmp_path / "events.jsonl"
    with events.open("wb") as out:
        for n in range(100_000):
            out.write(orjson.dumps(_activity(user_id=f"u{n % 1000}", metadata={"n": str(n)})) + b"\n")
    env = _env(KAFKA_BROKERS=kafka_bootstrap, PORT=str(port), DATABASE_URL=sqlite_url, **topics)
    process = _start(env, tmp_path / "service.log")
    try:
        _wait_ready(port, process, tmp_path / "service.log")
        sent = subprocess.run(
            [sys.executable, "-m", "ingest_client", "--url", f"http://127.0.0.1:{port}", "send", str(events),
             "--progress"],
            capture_output=True, text=True, timeout=600, cwd=ROOT, check=False,
        )  # fmt: skip
    finally:
        _stop(process)
    assert sent.returncode == 0, sent.stderr[-2000:]
    assert "sent 100,000 events: 100,000 taken, 0 rejected" in sent.stdout
    assert "100,000/100,000" in sent.stderr  # the progress bar reached the end

    tail = subprocess.run(
        [sys.executable, "-m", "ingest_client", "tail", topics["KAFKA_TOPIC_ACTIVITIES"], "--brokers", kafka_bootstrap,
         "--from-beginning", "--max", "100000", "--idle", "10"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )  # fmt: skip
    lines = tail.stdout.splitlines()
    assert len(lines) == 100_000, tail.stderr[-2000:]
    first = orjson.loads(lines[0])
    assert set(first) == {"topic", "partition", "offset", "key", "headers", "value"}
    assert first["headers"]["event_type"] == "activity"
    assert len({orjson.loads(line)["headers"]["event_id"] for line in lines}) == 100_000


def test_cli_says_clearly_when_the_service_or_broker_is_unreachable(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    rules = subprocess.run(
        [sys.executable, "-m", "ingest_client", "--url", dead, "rules", "list"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert rules.returncode == 2
    assert rules.stderr.startswith(f"ingest: cannot reach the service at {dead}")
    tail = subprocess.run(
        [sys.executable, "-m", "ingest_client", "tail", "x", "--brokers", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert tail.returncode == 2
    assert "cannot reach Kafka" in tail.stderr


class _NotingStatuses(httpx.AsyncBaseTransport):
    """The service's transport, noting each answer's status."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.statuses = inner, list[int]()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


async def test_client_retries_through_a_429_and_publishes_once(
    make_settings: SettingsFactory, kafka_bootstrap: str
) -> None:
    import asyncio

    # A one-record queue held by a record that lingers (no eager send) stays full for a second, on
    # any broker. Pausing the broker instead left the outcome to Tansu, which now and
    # then never answers a produce request it received while stopped (30 s later the request
    # timed out and the retried event was spooled, not accepted).
    settings = make_settings(kafka_queue_max_messages=1, kafka_producer_batch_timeout="1s",
                             kafka_producer_eager_below=0, kafka_producer_timeout="30s",
                             circuit_breaker_failure_threshold=100)  # fmt: skip
    app = create_app(settings)
    transport = _NotingStatuses(httpx.ASGITransport(app=app))
    async with (
        app.router.lifespan_context(app),
        AsyncEventClient("http://127.0.0.1", transport=transport) as client,
    ):
        assert (await client.publish(_activity(user_id="warm"))).ok
        holder = asyncio.create_task(client.publish(_activity(user_id="holds-the-queue")))
        producer = app.state.runtime.producer
        deadline = asyncio.get_running_loop().time() + 10
        while producer.queue_length() < 1:  # until the held record fills the one-record queue
            assert asyncio.get_running_loop().time() < deadline, "the held record never queued"
            await asyncio.sleep(0.01)
        result = await client.publish(_activity(user_id="retried"))
        assert (await holder).ok

    assert transport.statuses.count(429) >= 1, transport.statuses  # met a full queue, retried through
    assert result.status is PublishStatus.ACCEPTED
    records = read_topic(kafka_bootstrap, settings.kafka_topic_activities, expected=3)
    ids = Counter(record.headers["event_id"].decode() for record in records)
    assert ids[result.event_id or ""] == 1


def test_cli_admin_commands_and_migrate(kafka_bootstrap: str, tmp_path: Path, sqlite_url: str) -> None:
    topics = {key.upper(): value for key, value in topic_settings(f"adm{free_port()}").items()}
    port = free_port()
    env = _env(KAFKA_BROKERS=kafka_bootstrap, PORT=str(port), DATABASE_URL=sqlite_url,
               KAFKA_ALLOWED_TOPICS="workflow.events", **topics)  # fmt: skip
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    migrated = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False, env={**env, "DATABASE_URL": fresh},
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    assert "database at head" in migrated.stdout

    event = tmp_path / "event.json"
    event.write_bytes(orjson.dumps({"event_type": "attempt", **attempt(quality=5)}))
    process = _start(env, tmp_path / "service.log")
    try:
        _wait_ready(port, process, tmp_path / "service.log")

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "ingest_client", "--url", f"http://127.0.0.1:{port}", *args],
                capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
            )  # fmt: skip

        def ingest(*args: str) -> Any:
            done = run(*args)
            assert done.returncode == 0, done.stderr
            return orjson.loads(done.stdout)

        # Event types: apply the shipped workflow file, then again (nothing to do), then an evolved copy.
        workflow_file = ROOT / "event_types" / "workflow.json"
        applied = run("types", "apply", str(workflow_file))
        assert applied.returncode == 0, applied.stderr
        assert "workflow.completed: registered" in applied.stdout
        assert "routing rule workflow-events: saved" in applied.stdout
        again = run("types", "apply", str(workflow_file))
        assert "registered" not in again.stdout
        assert "schema version" not in again.stdout
        document = orjson.loads(workflow_file.read_bytes())
        failed = document["event_types"][2]["schema"]
        failed["required"].append("retry_count")  # a required field without a default: breaks backward
        failed["properties"]["retry_count"] = {"type": "integer"}
        breaking = tmp_path / "breaking.json"
        breaking.write_bytes(orjson.dumps(document))
        refused = run("types", "apply", str(breaking))
        assert refused.returncode == 2
        assert "required field `retry_count` added without a default" in refused.stderr
        listed = run("types", "list")
        assert "workflow.failed" in listed.stdout
        assert "built-in" in listed.stdout
        shown = ingest("types", "show", "workflow.failed")
        sample = tmp_path / "sample.json"
        sample.write_bytes(orjson.dumps({"user_id": "airflow", "occurred_at": at(), "source": "airflow"}))
        invalid = run("types", "validate", "workflow.failed", str(sample))
        assert invalid.returncode == 1
        assert "workflow_id" in invalid.stdout

        rules = ingest("rules", "list")
        explained = ingest("rules", "test", str(event))
        dead = ingest("dlq", "list", "--limit", "5")
        replayed = ingest("dlq", "replay", "--reason", "nothing-like-this", "--dry-run")
    finally:
        _stop(process)
    assert shown["version"] == 1
    assert shown["versions"] == [1]
    assert "all-attempts" in [rule["id"] for rule in rules["rules"]]
    assert "workflow-events" in [rule["id"] for rule in rules["rules"]]
    assert explained["topics"] == [topics["KAFKA_TOPIC_ML_TRAINING"], topics["KAFKA_TOPIC_ATTEMPTS"]]
    assert dead["records"] == []
    assert replayed["dry_run"] is True
