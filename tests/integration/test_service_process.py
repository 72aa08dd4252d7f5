"""The service as operators run it: `python -m app` in its own process, spoken to over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from app.devbroker import free_port, port_open
from tests.conftest import activity_event, attempt, topic_settings
from tests.kafka_helpers import read_topic
from tests.services import brokers

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _wait_ready(
    port: int,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 30,
    probe: str = "/readyz",
    workers: int = 1,
) -> None:
    """Until `probe` answers 200 from each of `workers` workers. Each worker listens on a socket of
    its own, so one worker answering says nothing of the others: each attempt opens a connection,
    asks which worker holds it, then probes on that same connection."""
    deadline = time.monotonic() + timeout
    ready: set[int] = set()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"service exited with {process.returncode}: {log.read_text()}")
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1) as client:
                pid = client.get("/metrics/publisher?scope=worker").json()["pid"] if workers > 1 else 0
                if client.get(probe).status_code == 200:
                    ready.add(pid)
        except (httpx.TransportError, ValueError, KeyError):
            pass
        if len(ready) >= workers:
            return
        time.sleep(0.1)
    raise AssertionError(f"{len(ready)} of {workers} workers ready within {timeout}s: {log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


@contextmanager
def _running_service(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m app` on `port`, ready to serve; stopped (SIGINT, then SIGKILL) afterwards."""
    process = _start({**env, "PORT": str(port)}, log)
    try:
        _wait_ready(port, process, log, workers=int(env.get("WORKERS", "1")))
        yield process
    finally:
        _stop(process)


def _env(**values: str) -> dict[str, str]:
    ours = ("KAFKA_", "DEV_BROKER", "DATABASE_URL", "DATA_DIR", "PORT")
    env = {key: value for key, value in os.environ.items() if not key.startswith(ours)}
    env["AUTH_ENABLED"] = "false"
    env.update(values)
    env["LOG_FORMAT"] = "json"
    return env


def _two_workers_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """`_env` for WORKERS=2, with the files the workers share (idempotency keys, Prometheus
    figures) under this test's directory."""
    return _env(
        WORKERS="2",
        DATA_DIR=str(tmp_path / "data"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        **values,
    )


@pytest.fixture
def service_port() -> int:
    return free_port()


def test_running_service_publishes_a_curl_style_post(
    kafka_bootstrap: str, service_port: int, tmp_path: Path, sqlite_url: str
) -> None:
    topics = {key.upper(): value for key, value in topic_settings(f"proc{service_port}").items()}
    env = _env(KAFKA_BROKERS=kafka_bootstrap, PORT=str(service_port), DATABASE_URL=sqlite_url, **topics)
    process = _start(env, tmp_path / "service.log")
    try:
        _wait_ready(service_port, process, tmp_path / "service.log")
        response = httpx.post(
            f"http://127.0.0.1:{service_port}/v1/events/attempts",
            content=orjson.dumps(attempt(user_id="curl-user", quality=5)),
            headers={"Content-Type": "application/json"},
            timeout=15,
        )
        assert response.status_code == 202, response.text
    finally:
        assert _stop(process) == 0

    for topic in (topics["KAFKA_TOPIC_ATTEMPTS"], topics["KAFKA_TOPIC_ML_TRAINING"]):
        (record,) = read_topic(kafka_bootstrap, topic, expected=1)
        assert record.key == b"curl-user"
        assert record.headers["event_id"].decode() == response.json()["event_id"]


def test_without_kafka_brokers_the_service_starts_and_stops_its_own_dev_broker(
    service_port: int, tmp_path: Path, sqlite_url: str
) -> None:
    broker_port = free_port()
    env = _env(PORT=str(service_port), DEV_BROKER_PORT=str(broker_port), DATABASE_URL=sqlite_url)
    process = _start(env, tmp_path / "service.log")
    try:
        _wait_ready(service_port, process, tmp_path / "service.log")
        assert port_open(broker_port)
        response = httpx.post(
            f"http://127.0.0.1:{service_port}/v1/events/attempts",
            json=attempt(quality=4),
            timeout=15,
        )
        assert response.status_code == 202, response.text
        (record,) = read_topic(f"127.0.0.1:{broker_port}", "user.attempts", expected=1)
        assert record.headers["event_id"].decode() == response.json()["event_id"]
    finally:
        assert _stop(process) == 0
    assert not port_open(broker_port), "the development broker outlived the service"


def test_spooled_events_survive_a_killed_service(service_port: int, tmp_path: Path, sqlite_url: str) -> None:
    broker = brokers.new_broker(tmp_path)  # not started yet: Kafka is down
    topics = {key.upper(): value for key, value in topic_settings(f"kill{service_port}").items()}
    env = _env(
        KAFKA_BROKERS=broker.bootstrap,
        PORT=str(service_port),
        DATABASE_URL=sqlite_url,
        KAFKA_PRODUCER_TIMEOUT="1s",
        **topics,
    )
    process = _start(env, tmp_path / "first.log")
    accepted: list[str] = []
    try:
        _wait_ready(service_port, process, tmp_path / "first.log", probe="/healthz")
        with httpx.Client(base_url=f"http://127.0.0.1:{service_port}", timeout=15) as client:
            for n in range(20):
                ack = "spool" if n % 2 else "kafka"
                response = client.post(
                    f"/v1/events/attempts?ack={ack}", json=attempt(user_id=f"k{n % 4}", quality=1)
                )
                assert response.status_code == 202, response.text
                assert response.json()["status"] == "spooled"
                accepted.append(response.json()["event_id"])
    finally:
        process.kill()  # SIGKILL: no shutdown hook runs
        process.wait(timeout=10)

    broker.start()
    try:
        process = _start(env, tmp_path / "second.log")
        try:
            _wait_ready(service_port, process, tmp_path / "second.log")
            records = read_topic(broker.bootstrap, topics["KAFKA_TOPIC_ATTEMPTS"], expected=20, timeout=60)
        finally:
            assert _stop(process) == 0
    finally:
        broker.stop()
    assert {record.headers["event_id"].decode() for record in records} == set(accepted)


def test_sigterm_drains_then_exits(
    kafka_bootstrap: str, service_port: int, tmp_path: Path, sqlite_url: str
) -> None:
    topics = {key.upper(): value for key, value in topic_settings(f"term{service_port}").items()}
    env = _env(
        KAFKA_BROKERS=kafka_bootstrap,
        PORT=str(service_port),
        DATABASE_URL=sqlite_url,
        SHUTDOWN_DRAIN_DELAY="1500ms",
        **topics,
    )
    process = _start(env, tmp_path / "service.log")
    try:
        _wait_ready(service_port, process, tmp_path / "service.log")
        with httpx.Client(base_url=f"http://127.0.0.1:{service_port}", timeout=15) as client:
            accepted = [
                client.post("/v1/events/activities", json=activity_event(user_id=f"t{n}")).json()["event_id"]
                for n in range(10)
            ]
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert client.get("/readyz").status_code == 503
            refused = client.post("/v1/events/activities", json=activity_event())
            assert refused.status_code == 503
            assert refused.json()["code"] == "shutting_down"
            assert "Retry-After" in refused.headers
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    finally:
        _stop(process)
    records = read_topic(kafka_bootstrap, topics["KAFKA_TOPIC_ACTIVITIES"], expected=10)
    assert {record.headers["event_id"].decode() for record in records} == set(accepted)


def test_publisher_metrics_and_health_answer_for_the_whole_service_whichever_worker_answers(
    kafka_bootstrap: str, service_port: int, tmp_path: Path, sqlite_url: str
) -> None:
    topics = {key.upper(): value for key, value in topic_settings(f"whole{service_port}").items()}
    env = _two_workers_env(tmp_path, KAFKA_BROKERS=kafka_bootstrap, DATABASE_URL=sqlite_url, **topics)
    posted = 30
    with _running_service(env, service_port, tmp_path / "service.log"):
        url = f"http://127.0.0.1:{service_port}"
        for n in range(posted):  # a new connection each time, so both workers take requests
            response = httpx.post(
                f"{url}/v1/events/activities", json=activity_event(user_id=f"s{n}"), timeout=15
            )
            assert response.status_code == 202
        # Fresh connections again: every call may land on either worker, at once, with no waiting.
        service = [httpx.get(f"{url}/metrics/publisher", timeout=15).json() for _ in range(20)]
        health = [httpx.get(f"{url}/metrics/publisher/health", timeout=15).json() for _ in range(20)]
        workers = [httpx.get(f"{url}/metrics/publisher?scope=worker", timeout=15).json() for _ in range(20)]
    answered_by = {body["pid"] for body in service}
    assert len(answered_by) == 2, "both workers should have answered"
    for body in service:
        assert body["scope"] == "service"
        assert body["events_published"] == posted, body
        assert body["topics"][topics["KAFKA_TOPIC_ACTIVITIES"]]["published"] == posted
        assert body["success_rate"] == 1.0
        assert body["average_latency_ms"] is not None
        assert body["circuit_breaker"]["state"] == "closed"
        assert sorted(worker["pid"] for worker in body["workers"]) == sorted(answered_by)
        # Each worker's own figures are as of its last report (REPORT_INTERVAL_SECONDS), not the counts.
        assert sum(worker["events_published"] for worker in body["workers"]) <= posted
        assert all(worker["reported_at"] > 0 for worker in body["workers"])
    for body in health:
        assert (body["scope"], body["workers"], body["status"]) == ("service", 2, "healthy"), body
    per_worker = {body["pid"]: body["events_published"] for body in workers}
    assert all(body["scope"] == "worker" for body in workers)
    assert len(per_worker) == 2
    assert sum(per_worker.values()) == posted  # each worker counts only its own


def test_several_workers_report_the_sum_to_prometheus(
    kafka_bootstrap: str, service_port: int, tmp_path: Path, sqlite_url: str
) -> None:
    topics = {key.upper(): value for key, value in topic_settings(f"workers{service_port}").items()}
    env = _two_workers_env(
        tmp_path,
        KAFKA_BROKERS=kafka_bootstrap,
        PORT=str(service_port),
        DATABASE_URL=sqlite_url,
        **topics,
    )
    process = _start(env, tmp_path / "service.log")
    try:
        _wait_ready(service_port, process, tmp_path / "service.log", workers=2)
        pids: set[int] = set()
        with httpx.Client(base_url=f"http://127.0.0.1:{service_port}", timeout=15) as client:
            for n in range(40):
                # A new connection each time, so both workers take requests.
                response = httpx.post(
                    f"http://127.0.0.1:{service_port}/v1/events/activities",
                    json=activity_event(user_id=f"w{n}"),
                )
                assert response.status_code == 202
            for _ in range(20):
                pids.add(client.get("/metrics/publisher", headers={"Connection": "close"}).json()["pid"])
            text = client.get("/metrics/prometheus").text
            # A rule added through one worker takes effect in the other within the poll interval.
            rule = {
                "id": "everything-to-dlq-copy",
                "name": "copy",
                "event_types": ["activity"],
                "topics": [topics["KAFKA_TOPIC_DLQ"]],
            }
            assert client.post("/admin/routing-rules", json=rule).status_code == 201
            time.sleep(3)  # ROUTING_RULES_POLL_INTERVAL is 2s
            seen: set[tuple[int, bool]] = set()
            for _ in range(30):
                listed = client.get("/admin/routing-rules", headers={"Connection": "close"}).json()
                seen.add(
                    (listed["worker_pid"], any(r["id"] == "everything-to-dlq-copy" for r in listed["rules"]))
                )
            assert {pid for pid, _ in seen} == pids, seen  # both workers answered
            assert all(has_rule for _, has_rule in seen), seen
    finally:
        assert _stop(process) == 0
    line = f'event_ingest_events_published_total{{topic="{topics["KAFKA_TOPIC_ACTIVITIES"]}"}}'
    (sample,) = [row for row in text.splitlines() if row.startswith(line)]
    assert float(sample.split()[-1]) == 40.0  # the sum over both workers, whichever answered the scrape
    assert len(pids) == 2, "both workers should have served requests"


def test_a_repeat_reaching_another_worker_is_answered_duplicate_and_published_once(
    kafka_bootstrap: str, service_port: int, tmp_path: Path, sqlite_url: str
) -> None:
    """With several workers the default idempotency store is the one they share (the host store):
    the same attempt posted on fresh connections, so both workers take copies, reaches Kafka once."""
    topics = {key.upper(): value for key, value in topic_settings(f"repeat{service_port}").items()}
    env = _two_workers_env(
        tmp_path,
        KAFKA_BROKERS=kafka_bootstrap,
        DATABASE_URL=sqlite_url,
        **topics,
    )
    event = attempt(user_id="repeat-user", client_attempt_id="repeat-attempt")
    with _running_service(env, service_port, tmp_path / "service.log"):
        url = f"http://127.0.0.1:{service_port}"
        answers = [httpx.post(f"{url}/v1/events/attempts", json=event, timeout=15) for _ in range(20)]
        workers = {httpx.get(f"{url}/metrics/publisher", timeout=15).json()["pid"] for _ in range(12)}
    assert len(workers) == 2, "both workers should take fresh connections"
    statuses = [answer.json()["status"] for answer in answers]
    assert statuses == ["accepted"] + ["duplicate"] * 19, statuses
    assert {answer.json()["event_id"] for answer in answers} == {answers[0].json()["event_id"]}
    records = read_topic(kafka_bootstrap, topics["KAFKA_TOPIC_ATTEMPTS"], expected=1)
    assert len(records) == 1


def test_workers_share_long_lived_connections_and_a_dead_worker_is_replaced(
    kafka_bootstrap: str, service_port: int, tmp_path: Path, sqlite_url: str
) -> None:
    """Each worker listens on a socket of its own (SO_REUSEPORT), so keep-alive connections spread
    over the workers instead of piling on whichever accepted first."""
    if not sys.platform.startswith("linux"):
        pytest.skip("connection spreading by SO_REUSEPORT is Linux's")
    env = _two_workers_env(
        tmp_path,
        KAFKA_BROKERS=kafka_bootstrap,
        DATABASE_URL=sqlite_url,
    )
    log = tmp_path / "service.log"
    with _running_service(env, service_port, log) as process:
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{service_port}", timeout=15) for _ in range(40)]
        try:
            served_by = [client.get("/metrics/publisher").json()["pid"] for client in clients]
            # The same connection keeps its worker.
            assert [client.get("/metrics/publisher").json()["pid"] for client in clients] == served_by
        finally:
            for client in clients:
                client.close()
        shares = {pid: served_by.count(pid) for pid in set(served_by)}
        assert len(shares) == 2, shares
        assert min(shares.values()) >= 8, shares  # binomial(40, 1/2): fewer than 8 once in 10^5 runs

        # A worker killed outright is started again; the service keeps serving meanwhile.
        os.kill(served_by[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        pids: set[int] = set()
        while time.monotonic() < deadline and len(pids) < 2:
            try:
                answer = httpx.get(f"http://127.0.0.1:{service_port}/readyz", timeout=2)
                if answer.status_code == 200:
                    pid = httpx.get(f"http://127.0.0.1:{service_port}/metrics/publisher", timeout=2)
                    pids.add(pid.json()["pid"])
            except httpx.TransportError:
                pass  # connections queued on the dead worker's socket wait for its successor
            time.sleep(0.1)
        assert process.poll() is None, log.read_text()
        assert len(pids) == 2, pids  # the surviving worker and the new one
        assert served_by[0] not in pids
    assert "worker died: starting another" in log.read_text()


def test_a_worker_that_cannot_start_stops_the_service_with_an_error(
    service_port: int, tmp_path: Path
) -> None:
    """Restarting a worker whose start-up fails would loop for ever: the service exits 1 instead."""
    env = _two_workers_env(
        tmp_path,
        KAFKA_BROKERS="127.0.0.1:1",
        DATABASE_URL=f"sqlite:///{tmp_path / 'missing-directory' / 'ingest.db'}",
        PORT=str(service_port),
    )
    log = tmp_path / "service.log"
    process = _start(env, log)
    try:
        assert process.wait(timeout=60) == 1, log.read_text()
    finally:
        _stop(process)
    assert not port_open(service_port)
