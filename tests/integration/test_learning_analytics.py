"""The analytics component against a real broker, as a real process: exact windowed figures
(compared with the same aggregates computed here in plain Python), late events, bad input."""

from __future__ import annotations

import math
import random
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from tests.kafka_helpers import Record, read_topic
from tests.services import brokers
from tests.services.analytics import AnalyticsProcess

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)
# Event times a few days back, never fixed dates: records carry their event time as their Kafka
# timestamp (windows, late events, the repartition topic), and the broker deletes by that time once
# it is older than the topics' retention (7 days); the latest event sent is DAY + 4 days, and the
# component refuses times more than a day ahead.
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=4)
H0 = DAY + 10 * HOUR
LEARNERS = [f"learner-{n}" for n in range(6)]
ITEMS = [f"item-{n}" for n in range(8)]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def attempt_event(user: str, item: str, moment: datetime, rng: random.Random) -> dict[str, Any]:
    return {
        "event_type": "attempt", "event_id": str(uuid.uuid4()), "user_id": user, "occurred_at": iso(moment),
        "client_attempt_id": uuid.uuid4().hex[:12], "item_id": item, "correct": rng.random() < 0.6,
        "quality": rng.randint(0, 5), "time_taken_ms": rng.randint(500, 60_000),
        "hints_used": rng.choice([None, 0, 1, 2]), "schema_version": 1,
    }  # fmt: skip


def session_event(user: str, moment: datetime, status: str, minutes: int) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_type": "session", "event_id": str(uuid.uuid4()), "user_id": user, "occurred_at": iso(moment),
        "session_id": uuid.uuid4().hex[:8], "status": status, "schema_version": 1,
    }  # fmt: skip
    if status != "started":
        event |= {"started_at": iso(moment - timedelta(minutes=minutes)), "ended_at": iso(moment)}
    return event


def nearest_rank_p90(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def hourly(events: list[dict[str, Any]], key_field: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The events by (key, start of their hour)."""
    windows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        moment = datetime.fromisoformat(event["occurred_at"])
        windows[(event[key_field], iso(moment.replace(minute=0, second=0, microsecond=0)))].append(event)
    return windows


def expected_learner(
    events: list[dict[str, Any]], late: dict[str, int]
) -> dict[tuple[str, str], dict[str, Any]]:
    windows = hourly(events, "user_id")
    figures = {}
    for (user, start), group in windows.items():
        times = [e["time_taken_ms"] for e in group]
        correct = sum(e["correct"] for e in group)
        figures[(user, start)] = {
            "user_id": user, "window_start": start,
            "window_end": iso(datetime.fromisoformat(start) + HOUR), "attempts": len(group), "correct": correct,
            "accuracy": correct / len(group), "time_taken_ms_mean": sum(times) / len(times),
            "time_taken_ms_p90": nearest_rank_p90(times), "quality_mean": sum(e["quality"] for e in group) / len(group),
            "distinct_items": len({e["item_id"] for e in group}), "hints_used": sum(e["hints_used"] or 0 for e in group),
            "late_events_dropped": late.get(user, 0),
        }  # fmt: skip
    return figures


def expected_item(
    events: list[dict[str, Any]], late: dict[str, int]
) -> dict[tuple[str, str], dict[str, Any]]:
    windows = hourly(events, "item_id")
    return {
        (item, start): {
            "item_id": item,
            "window_start": start,
            "window_end": iso(datetime.fromisoformat(start) + HOUR),
            "attempts": len(group),
            "correct": sum(e["correct"] for e in group),
            "correct_rate": sum(e["correct"] for e in group) / len(group),
            "late_events_dropped": late.get(item, 0),
        }
        for (item, start), group in windows.items()
    }


def expected_sessions(
    events: list[dict[str, Any]], late: dict[str, int]
) -> dict[tuple[str, str], dict[str, Any]]:
    days: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        days[(event["user_id"], event["occurred_at"][:10])].append(event)
    figures = {}
    for (user, day), group in days.items():
        ended = [e for e in group if e["status"] != "started"]
        seconds = sum(
            (datetime.fromisoformat(e["ended_at"]) - datetime.fromisoformat(e["started_at"])).total_seconds()
            for e in ended
        )
        figures[(user, f"{day}T00:00:00Z")] = {
            "user_id": user, "day": day, "window_start": f"{day}T00:00:00Z",
            "window_end": iso(datetime.fromisoformat(f"{day}T00:00:00+00:00") + timedelta(days=1)),
            "sessions_started": sum(e["status"] == "started" for e in group),
            "sessions_completed": sum(e["status"] == "completed" for e in group),
            "sessions_abandoned": sum(e["status"] == "abandoned" for e in group),
            "total_seconds": seconds, "late_events_dropped": late.get(user, 0),
        }  # fmt: skip
    return figures


def windows_of(records: list[Record], key_field: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Each window once; a window written twice (at-least-once, after a fault) must be the same."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        value = orjson.loads(record.value)
        key = (value[key_field], value["window_start"])
        assert found.setdefault(key, value) == value, f"two different figures for window {key}"
        assert record.key == value[key_field].encode()
    return found


def approx(windows: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The figures with their floats compared to within rounding."""
    return {
        key: {
            name: pytest.approx(value) if isinstance(value, float) else value
            for name, value in figures.items()
        }
        for key, figures in windows.items()
    }


WINDOW_TOPICS = {
    "learner": ("ANALYTICS_LEARNER_TOPIC", "user_id"),
    "item": ("ANALYTICS_ITEM_TOPIC", "item_id"),
    "sessions": ("ANALYTICS_SESSION_TOPIC", "user_id"),
}


def check_windows(env: dict[str, str], **wanted: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Each aggregate's topic holds exactly the windows `wanted` (by aggregate): with exact figures,
    and on Apache Kafka (exactly-once) each window once."""
    for aggregate, want in wanted.items():
        setting, key_field = WINDOW_TOPICS[aggregate]
        records = read_topic(env["KAFKA_BROKERS"], env[setting], len(want), timeout=90)
        assert windows_of(records, key_field) == approx(want), aggregate
        if not brokers.is_tansu():
            assert len(records) == len(want), f"{aggregate}: a window written twice"


def consumed(process: AnalyticsProcess) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in process.metrics().splitlines()
        if line.startswith("analytics_records_consumed_total{")
    )


def wait_until_consumed(process: AnalyticsProcess, total: int, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while consumed(process) < total:
        assert time.monotonic() < deadline, f"consumed {consumed(process)} of {total} records"
        time.sleep(0.3)


def wait_until_caught_up(process: AnalyticsProcess, partitions: int, seconds: float = 90.0) -> None:
    """Until every input partition (attempts, sessions, the repartition topic) has no lag and the
    records fetched are processed (the count stays put for a second)."""
    deadline, before = time.monotonic() + seconds, -1.0
    while True:
        lags = [float(line.rsplit(" ", 1)[1]) for line in process.metrics().splitlines()
                if line.startswith("analytics_consumer_lag{") and "changelog__" not in line]  # fmt: skip
        now = consumed(process)
        if len(lags) >= partitions and not any(lags) and now == before:
            return
        assert time.monotonic() < deadline, f"lag {lags}"
        before = now
        time.sleep(1)


def metric(process: AnalyticsProcess, name: str, labels: str) -> float:
    selector = f"{{{labels}}}" if labels else ""
    match = re.search(rf"^{name}{selector} (\S+)$", process.metrics(), re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def analytics_env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    prefix = f"an{uuid.uuid4().hex[:8]}"
    return {
        "KAFKA_BROKERS": kafka_bootstrap,
        "KAFKA_TOPIC_ATTEMPTS": f"{prefix}.user.attempts",
        "KAFKA_TOPIC_SESSIONS": f"{prefix}.user.sessions",
        "KAFKA_TOPIC_PARTITIONS": "3",
        "KAFKA_TOPIC_REPLICATION_FACTOR": "3" if brokers.shared_size() >= 3 else "1",
        "ANALYTICS_LEARNER_TOPIC": f"{prefix}.user.learning_stats",
        "ANALYTICS_ITEM_TOPIC": f"{prefix}.item.learning_stats",
        "ANALYTICS_SESSION_TOPIC": f"{prefix}.user.session_stats",
        "ANALYTICS_DLQ_TOPIC": f"{prefix}.analytics.dlq",
        "ANALYTICS_CONSUMER_GROUP": f"{prefix}-analytics",
        "ANALYTICS_STATE_DIR": str(tmp_path / "state"),
        "ANALYTICS_WINDOW": "1h",
        "ANALYTICS_GRACE": "30m",
        "ANALYTICS_COMMIT_INTERVAL": "1s",
        "ANALYTICS_LAG_INTERVAL": "1s",
        "ANALYTICS_CONSUMER_CONFIG__SESSION_TIMEOUT_MS": "6000",
        "LOG_FORMAT": "text",
    }


@pytest.fixture
def analytics(analytics_env: dict[str, str], tmp_path: Path) -> Iterator[AnalyticsProcess]:
    process = AnalyticsProcess(analytics_env, tmp_path / "analytics.log").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.timeout(300)
def test_windows_by_event_time_exact_with_late_events_and_bad_input(
    analytics: AnalyticsProcess, analytics_env: dict[str, str]
) -> None:
    env, rng, started_ms = analytics_env, random.Random(7), time.time_ns() // 1_000_000
    attempts_topic, sessions_topic = env["KAFKA_TOPIC_ATTEMPTS"], env["KAFKA_TOPIC_SESSIONS"]
    producer = Producer({"bootstrap.servers": env["KAFKA_BROKERS"], "enable.idempotence": True})

    def send(topic: str, events: list[dict[str, Any]]) -> None:
        for event in events:
            producer.produce(topic, orjson.dumps(event), key=event["user_id"].encode(),
                             headers=[("content_type", b"application/json")])  # fmt: skip
        assert producer.flush(30) == 0

    # 1. In-order-enough attempts over 80 minutes, shuffled: out of order, but never beyond the grace
    #    for any learner or item, whatever order the partitions are read in; one day of sessions.
    attempts = [attempt_event(rng.choice(LEARNERS), rng.choice(ITEMS), H0 + timedelta(seconds=rng.randrange(80 * 60)), rng)
                for _ in range(150)]  # fmt: skip
    sessions = [session_event(user, DAY + timedelta(hours=8 + rng.randrange(12), minutes=rng.randrange(60)),
                              rng.choice(["started", "completed", "abandoned"]), rng.randint(1, 50))
                for user in LEARNERS for _ in range(4)]  # fmt: skip
    send(attempts_topic, attempts)
    send(sessions_topic, sessions)
    # Bad input: not JSON, a missing field, an impossible time; a session with an unknown status.
    for raw in (b"not json", orjson.dumps({**attempts[0], "item_id": None}),
                orjson.dumps({**attempts[1], "occurred_at": "1970-01-01T00:00:00Z"})):  # fmt: skip
        producer.produce(attempts_topic, raw, key=b"learner-0")
    producer.produce(sessions_topic, orjson.dumps({**sessions[0], "status": "paused"}), key=b"learner-0")
    assert producer.flush(30) == 0
    wait_until_consumed(analytics, 3 + len(attempts) + 1 + len(sessions) + len(attempts))  # + the re-keyed

    # 2. Time moves on for every learner and item (a pair per key: the same source partition as
    #    the late events below): the windows of step 1 close and are written once.
    pairs = list(zip(LEARNERS + LEARNERS, ITEMS, strict=False))
    advance = [
        attempt_event(user, item, H0 + 3 * HOUR + timedelta(seconds=n), rng)
        for n, (user, item) in enumerate(pairs)
    ]
    send(attempts_topic, advance)
    later_sessions = [session_event(user, DAY + timedelta(days=2), "started", 0) for user in LEARNERS]
    send(sessions_topic, later_sessions)
    want_learner = expected_learner(attempts, {})
    want_item = expected_item(attempts, {})
    want_sessions = expected_sessions(sessions, {})
    check_windows(env, learner=want_learner, item=want_item, sessions=want_sessions)
    # The re-keyed attempts carry the time they were written as their Kafka timestamp, not their
    # event time (days back): the broker deletes by it once past the retention.
    repartition = f"repartition__{env['ANALYTICS_CONSUMER_GROUP']}--{attempts_topic}--item_id"
    rekeyed = read_topic(env["KAFKA_BROKERS"], repartition, len(attempts), timeout=30)
    assert len(rekeyed) >= len(attempts)
    assert min(record.timestamp_ms for record in rekeyed) >= started_ms - 5_000

    # 3. Events for the first hour now: beyond the grace for their learner and their item.
    late = [attempt_event(user, item, H0 + timedelta(minutes=10), rng) for user, item in pairs[:3]]
    send(attempts_topic, late)
    send(sessions_topic, [session_event(LEARNERS[0], DAY + timedelta(hours=12), "completed", 5)])
    late_records = read_topic(env["KAFKA_BROKERS"], attempts_topic + ".late", 2 * len(late), timeout=60)
    assert sorted((orjson.loads(r.value)["aggregate"], orjson.loads(r.value)["event_id"]) for r in late_records) == sorted(
        [("learner", e["event_id"]) for e in late] + [("item", e["event_id"]) for e in late]
    )  # fmt: skip
    assert len(read_topic(env["KAFKA_BROKERS"], sessions_topic + ".late", 1, timeout=30)) == 1
    assert metric(analytics, "analytics_late_events_total", 'aggregate="learner"') == len(late)
    assert metric(analytics, "analytics_late_events_total", 'aggregate="item"') == len(late)

    # 4. Later still: the windows of step 2 close, counting the late events of their key so far.
    send(
        attempts_topic,
        [attempt_event(u, i, H0 + 6 * HOUR + timedelta(seconds=n), rng) for n, (u, i) in enumerate(pairs)],
    )
    send(sessions_topic, [session_event(user, DAY + timedelta(days=4), "started", 0) for user in LEARNERS])
    late_by_learner = {e["user_id"]: 1 for e in late}
    late_by_item = {e["item_id"]: 1 for e in late}
    want_learner |= expected_learner(advance, late_by_learner)
    want_item |= expected_item(advance, late_by_item)
    want_sessions |= expected_sessions(later_sessions, {LEARNERS[0]: 1})
    check_windows(env, learner=want_learner, item=want_item, sessions=want_sessions)

    # Bad input: in the DLQ with a reason each, and it never stopped the component.
    dead = read_topic(env["KAFKA_BROKERS"], env["ANALYTICS_DLQ_TOPIC"], 4, timeout=30)
    reasons = sorted(record.headers["dlq_reason"].decode() for record in dead)
    assert len(dead) == 4, reasons
    assert any(reason.startswith("not JSON") for reason in reasons)
    assert any("item_id" in reason for reason in reasons)
    assert any("impossible" in reason for reason in reasons)
    assert any("status 'paused'" in reason for reason in reasons)
    assert metric(analytics, "analytics_windows_produced_total", 'aggregate="learner"') >= len(want_learner)
    # Commits as the broker has them (with exactly-once, made by the transactions), and the lag.
    deadline = time.monotonic() + 20
    while metric(analytics, "analytics_commits_total", "") == 0:
        assert time.monotonic() < deadline, "no committed offset seen"
        time.sleep(0.5)
    committed = rf'^analytics_committed_offset{{partition="\d+",topic="{re.escape(attempts_topic)}"}} [1-9]'
    assert re.search(committed, analytics.metrics(), re.MULTILINE)
    assert "analytics_consumer_lag{" in analytics.metrics()


def assigned(process: AnalyticsProcess) -> float:
    return metric(process, "analytics_assigned_partitions", "")


@pytest.mark.timeout(400)
def test_two_processes_a_kill_and_restarts_with_and_without_state(
    analytics_env: dict[str, str], tmp_path: Path
) -> None:
    """Two processes share the partitions; one is SIGKILLed in the middle of its work and the other
    takes over; then restarts with local state kept and deleted. Every window is written with exact
    figures: exactly once on Apache Kafka; on the development broker (at-least-once) a window may
    be written twice, the same both times."""
    env, rng = analytics_env, random.Random(11)
    attempts_topic, sessions_topic = env["KAFKA_TOPIC_ATTEMPTS"], env["KAFKA_TOPIC_SESSIONS"]
    producer = Producer({"bootstrap.servers": env["KAFKA_BROKERS"], "enable.idempotence": True})

    def send(topic: str, events: list[dict[str, Any]]) -> None:
        for event in events:
            producer.produce(topic, orjson.dumps(event), key=event["user_id"].encode())
        assert producer.flush(30) == 0

    def attempts(count: int) -> list[dict[str, Any]]:
        return [attempt_event(rng.choice(LEARNERS), rng.choice(ITEMS),
                              H0 + timedelta(seconds=rng.randrange(80 * 60)), rng) for _ in range(count)]  # fmt: skip

    def process(name: str, state: str) -> AnalyticsProcess:
        return AnalyticsProcess(
            {**env, "ANALYTICS_STATE_DIR": str(tmp_path / state)}, tmp_path / f"{name}.log"
        )

    sent: list[dict[str, Any]] = []
    sessions = [session_event(user, DAY + timedelta(hours=9 + n), "completed", 10 + n)
                for user in LEARNERS for n in range(3)]  # fmt: skip
    first, second = process("a", "a").start(), process("b", "b").start()
    try:
        deadline = time.monotonic() + 60
        while not (assigned(first) and assigned(second)):  # the group split the partitions
            assert time.monotonic() < deadline, (assigned(first), assigned(second))
            time.sleep(0.5)
        batch = attempts(3000)
        send(attempts_topic, batch)
        send(sessions_topic, sessions)
        sent += batch
        deadline = time.monotonic() + 60
        while consumed(first) < 200:  # in the middle of its work
            assert time.monotonic() < deadline, consumed(first)
            time.sleep(0.05)
        first.kill()
        batch = attempts(500)
        send(attempts_topic, batch)
        sent += batch
        second.stop()  # SIGTERM: commits on the way out
        assert second.process is not None
        assert second.process.returncode == 0, second.log()[-2000:]
    finally:
        first.kill()
        second.kill()

    kept = process("c", "b").start()  # b's state kept
    try:
        batch = attempts(300)
        send(attempts_topic, batch)
        sent += batch
        wait_until_consumed(kept, 1)
    finally:
        kept.stop()
    fresh = process("d", "empty").start()  # no local state: rebuilt from the changelog topics
    try:
        # Windows close by event time: time may only move on once the backlog left by the kill is
        # read, or an item would see the later time from one partition before the older attempts
        # from another (late, rightly, but not what this test counts).
        wait_until_caught_up(fresh, partitions=9)
        pairs = list(zip(LEARNERS + LEARNERS, ITEMS, strict=False))
        send(attempts_topic, [attempt_event(u, i, H0 + 3 * HOUR, rng) for u, i in pairs])
        send(
            sessions_topic, [session_event(user, DAY + timedelta(days=2), "started", 0) for user in LEARNERS]
        )
        check_windows(
            env,
            learner=expected_learner(sent, {}),
            item=expected_item(sent, {}),
            sessions=expected_sessions(sessions, {}),
        )
    finally:
        fresh.stop()
