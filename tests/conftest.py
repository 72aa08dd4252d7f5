"""Shared fixtures: one real broker per test session, PostgreSQL, and apps wired to them.

KAFKA_BROKERS set in the environment points the integration tests at a running cluster; otherwise
the session starts a broker of the kind tests/services/brokers.py chooses (TEST_BROKER).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.config.settings import Settings, load_settings
from app.database import migrations
from app.devbroker import port_open
from app.factory import create_app
from tests.services import brokers
from tests.services.brokers import Broker
from tests.services.postgres import PostgresServer, PostgresUnavailableError

# A server already answering here is used as it is (the old machines ran one); otherwise the session
# starts its own (tests/services/postgres.py).
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database of this test's own."""
    url = f"sqlite:///{tmp_path / 'ingest.db'}"
    migrations.upgrade(url)
    return url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server for the session: TEST_POSTGRES_URL, one answering on 127.0.0.1:5432,
    or a throwaway one started here. Never skipped: if none can be had, the tests using it fail, saying why."""
    configured = os.environ.get("TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    if port_open(5432):
        yield DEFAULT_POSTGRES_URL
        return
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="event-ingest-postgres-")))
    try:
        server.start()
    except PostgresUnavailableError as exc:
        server.remove()
        pytest.fail(f"PostgreSQL tests need a server and none could be started: {exc}", pytrace=False)
    try:
        yield server.url
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A migrated PostgreSQL database of this test's own on the session's server, dropped afterwards."""
    server = make_url(postgres_server)
    name = f"ingest_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        migrations.upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker for the whole session: the configured cluster (KAFKA_BROKERS), or one started here
    of the kind tests/services/brokers.py says."""
    configured = os.environ.get("KAFKA_BROKERS")
    if configured:
        yield configured
        return
    broker = brokers.new_broker(tmp_path_factory.mktemp("broker"), size=brokers.shared_size())
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def dev_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test's own, for tests that pause, kill or restart it."""
    broker = brokers.new_broker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def topic_settings(prefix: str) -> dict[str, str]:
    """Topic names unique to one test, so that counts read back are exact."""
    return {
        "kafka_topic_attempts": f"{prefix}.user.attempts",
        "kafka_topic_sessions": f"{prefix}.user.sessions",
        "kafka_topic_placements": f"{prefix}.user.placements",
        "kafka_topic_activities": f"{prefix}.user.activities",
        "kafka_topic_ml_training": f"{prefix}.ml.training_events",
        "kafka_topic_dlq": f"{prefix}.dlq.events",
    }


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(kafka_bootstrap: str, sqlite_url: str) -> SettingsFactory:
    """Settings for a test app: the session broker, unique topics, a fresh spool, short timeouts."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_brokers": kafka_bootstrap,
            "database_url": sqlite_url,
            "kafka_producer_timeout": "5s",
            "log_format": "text",
            "auth_enabled": False,  # the security tests switch it on
            **topic_settings(f"t{uuid.uuid4().hex[:10]}"),
        }
        values.update(overrides)
        return load_settings(_env_file=None, **values)

    return build


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan started, and an HTTP client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


@pytest.fixture
async def service(make_settings: SettingsFactory) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """A running app on the session broker with default settings, and its settings."""
    settings = make_settings()
    async with running(create_app(settings)) as client:
        yield client, settings


# Event times a little in the past, so that they stay inside EVENT_MAX_AGE whenever the tests run.
_BASE_TIME = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)


def at(minutes: int = 0) -> str:
    """An RFC 3339 UTC time `minutes` after the tests' base time (two hours ago)."""
    return (_BASE_TIME + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


ATTEMPT_TIME_UTC = at(15)
ATTEMPT_TIME_PLUS_ONE = (
    (_BASE_TIME + timedelta(minutes=15)).astimezone(timezone(timedelta(hours=1))).isoformat()
)


def attempt(**fields: Any) -> dict[str, Any]:
    """A valid attempt event; keyword arguments override fields."""
    event: dict[str, Any] = {
        "user_id": "user-1",
        "occurred_at": ATTEMPT_TIME_PLUS_ONE,
        "client_attempt_id": f"ca-{uuid.uuid4().hex[:8]}",
        "item_id": "item-1",
        "correct": True,
        "quality": 5,
        "time_taken_ms": 1200,
    }
    event.update(fields)
    return event


def session_event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "user_id": "user-1",
        "occurred_at": at(30),
        "session_id": "s-1",
        "status": "completed",
        "started_at": at(0),
        "ended_at": at(30),
        "items_attempted": 3,
        "items_correct": 2,
    }
    event.update(fields)
    return event


def placement_event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "user_id": "user-1",
        "occurred_at": at(60),
        "placement_id": "p-1",
        "test_id": "spanish-a1",
        "status": "completed",
        "score": 0.8,
        "level": "A2",
    }
    event.update(fields)
    return event


def activity_event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "user_id": "user-1",
        "occurred_at": at(65),
        "activity_type": "lesson_opened",
        "properties": {"lesson_id": "L-5"},
    }
    event.update(fields)
    return event
