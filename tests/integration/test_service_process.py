"""The service as operators run it: `python -m app` in its own process, spoken to over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from app.devbroker import free_port, port_open
from tests.conftest import attempt, topic_settings
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _wait_ready(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"service exited with {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"service not ready within {timeout}s: {log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


def _env(**values: str) -> dict[str, str]:
    ours = ("KAFKA_", "DEV_BROKER", "DATABASE_URL", "DATA_DIR", "PORT")
    env = {key: value for key, value in os.environ.items() if not key.startswith(ours)}
    env.update(values)
    env["LOG_FORMAT"] = "json"
    return env


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
