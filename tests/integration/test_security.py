"""Security end to end: keys, scopes, event-type limits, rate limits and hostile requests.

Every hostile request gets its exact expected status; after each one a valid event is still
accepted, and at the end every accepted event is read back from Kafka.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from app.config.settings import Settings
from app.factory import create_app
from tests.conftest import SettingsFactory, activity_event, attempt, running, session_event
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration

ADMIN_KEY = "admin-" + os.urandom(12).hex()
INGEST_KEY = "ingest-" + os.urandom(12).hex()
ATTEMPTS_ONLY_KEY = "attempts-" + os.urandom(12).hex()
SLOW_KEY = "slow-" + os.urandom(12).hex()
MAX_BATCH = 50
MAX_BYTES = 64 * 1024


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def secured(make_settings: SettingsFactory) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    settings = make_settings(
        auth_enabled=True,
        api_keys=[
            {"name": "ops", "key": ADMIN_KEY, "scopes": ["admin", "metrics"]},
            {"name": "web", "key": INGEST_KEY, "scopes": ["ingest"]},
            {"name": "quiz", "key": ATTEMPTS_ONLY_KEY, "scopes": ["ingest"], "event_types": ["attempt"]},
            {"name": "slow", "key": SLOW_KEY, "scopes": ["ingest"], "rate_limit": 0.5},
        ],
        rate_limit_burst=3,
        max_batch_events=MAX_BATCH,
        max_request_bytes=MAX_BYTES,
    )
    async with running(create_app(settings)) as client:
        yield client, settings


@dataclass
class Case:
    name: str
    status: int
    method: str = "POST"
    path: str = "/v1/events/attempts"
    key: str | None = INGEST_KEY
    json: Any = None
    content: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    check: Callable[[httpx.Response], None] | None = None

    async def send(self, client: httpx.AsyncClient) -> httpx.Response:
        headers = {**(_auth(self.key) if self.key else {}), **self.headers}
        if self.json is not None:
            return await client.request(self.method, self.path, json=self.json, headers=headers)
        if self.content is not None:
            headers.setdefault("Content-Type", "application/json")
        return await client.request(self.method, self.path, content=self.content, headers=headers)


def _names_field(name: str) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        fields = [error["field"] for error in response.json()["detail"]]
        assert any(name in item for item in fields), fields

    return check


def _www_authenticate(response: httpx.Response) -> None:
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _deeply_nested(depth: int) -> bytes:
    return (
        b'{"user_id":"u","occurred_at":"'
        + _now().encode()
        + b'","activity_type":"x","properties":'
        + (b'{"a":' * depth + b"1" + b"}" * depth)
        + b"}"
    )


def _now(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 8192):
        yield b" " * 8192


def _hostile_cases() -> list[Case]:
    batch_item_forbidden = {
        "events": [{"event_type": "attempt", **attempt()}, {"event_type": "session", **session_event()}]
    }
    return [
        # --- who may call
        Case("no key", 401, key=None, json=attempt(), check=_www_authenticate),
        Case("unknown key", 401, key="eik_not-a-real-key", json=attempt(), check=_www_authenticate),
        Case(
            "Basic auth instead of a key",
            401,
            key=None,
            json=attempt(),
            headers={"Authorization": "Basic dTpw"},
        ),
        Case("empty bearer", 401, key=None, json=attempt(), headers={"Authorization": "Bearer "}),
        Case("ingest key on /admin", 403, method="GET", path="/admin/routing-rules"),
        Case("ingest key on /metrics", 403, method="GET", path="/metrics/publisher"),
        Case(
            "ingest key creating a key", 403, path="/admin/api-keys", json={"name": "x", "scopes": ["admin"]}
        ),
        Case("admin key posting events", 403, key=ADMIN_KEY, json=attempt()),
        Case("X-API-Key header works", 202, key=None, json=attempt(), headers={"X-API-Key": INGEST_KEY}),
        Case(
            "attempts-only key posting a session",
            403,
            path="/v1/events/sessions",
            key=ATTEMPTS_ONLY_KEY,
            json=session_event(),
        ),
        Case(
            "attempts-only key: session inside a batch",
            207,
            path="/v1/events/batch",
            key=ATTEMPTS_ONLY_KEY,
            json=batch_item_forbidden,
            check=lambda r: _assert_equal(
                [(item["status"], item.get("status_code")) for item in r.json()["results"]],
                [("accepted", None), ("rejected", 403)],
            ),
        ),
        # --- sizes and shapes
        Case("body over MAX_REQUEST_BYTES", 413, content=b'{"user_id": "' + b"x" * MAX_BYTES + b'"}'),
        Case("streamed body over the limit, no Content-Length", 413, content=_chunks(MAX_BYTES * 2)),
        Case(
            "gzip bomb",
            413,
            content=gzip.compress(b" " * (MAX_BYTES * 50)),
            headers={"Content-Encoding": "gzip"},
        ),
        Case("unknown Content-Encoding", 415, content=b"{}", headers={"Content-Encoding": "br"}),
        Case(
            "batch over MAX_BATCH_EVENTS",
            413,
            path="/v1/events/batch",
            json={"events": [activity_event(event_type="activity")] * (MAX_BATCH + 1)},
        ),
        Case("batch that is a list", 422, path="/v1/events/batch", json=[attempt()]),
        Case("batch of non-objects", 207, path="/v1/events/batch", json={"events": [1, "x", None]}),
        Case("runaway nesting (20k levels)", 400, content=b"[" * 20_000 + b"]" * 20_000),
        Case(
            "properties nested 6 levels",
            422,
            path="/v1/events/activities",
            content=_deeply_nested(6),
            check=_names_field("properties"),
        ),
        Case(
            "user_id of 129 characters", 422, json=attempt(user_id="u" * 129), check=_names_field("user_id")
        ),
        Case(
            "33 metadata entries",
            422,
            json=attempt(metadata={f"k{i}": "v" for i in range(33)}),
            check=_names_field("metadata"),
        ),
        Case(
            "metadata value of 1025 characters",
            422,
            json=attempt(metadata={"k": "v" * 1025}),
            check=_names_field("metadata"),
        ),
        Case(
            "properties over 16 KiB",
            422,
            path="/v1/events/activities",
            json=activity_event(properties={"p": "x" * 17000}),
            check=_names_field("properties"),
        ),
        # --- types and encodings
        Case("quality as a string", 422, json=attempt(quality="5"), check=_names_field("quality")),
        Case("correct as a string", 422, json=attempt(correct="yes"), check=_names_field("correct")),
        Case("quality out of range", 422, json=attempt(quality=9), check=_names_field("quality")),
        Case(
            "naive timestamp",
            422,
            json=attempt(occurred_at="2026-11-24T10:00:00"),
            check=_names_field("occurred_at"),
        ),
        Case(
            "timestamp a day ahead",
            422,
            json=attempt(occurred_at=_now(days=1)),
            check=_names_field("occurred_at"),
        ),
        Case(
            "timestamp a year old",
            422,
            json=attempt(occurred_at=_now(days=-365)),
            check=_names_field("occurred_at"),
        ),
        Case("unknown field", 422, json=attempt(is_admin=True), check=_names_field("is_admin")),
        Case("duplicate JSON key", 422, content=orjson.dumps(attempt())[:-1] + b',"quality":0}'),
        Case("invalid UTF-8", 400, content=b'{"user_id": "\xff\xfe"}'),
        Case(
            "NaN score",
            422,
            path="/v1/events/placements",
            content=b'{"user_id":"u","occurred_at":"'
            + _now().encode()
            + b'","placement_id":"p","score":NaN}',
        ),
        Case("malformed JSON", 422, content=b'{"user_id": '),
        Case("empty body", 422, content=b""),
        Case("JSON null", 422, content=b"null"),
        Case("text/plain", 415, content=b"{}", headers={"Content-Type": "text/plain"}),
        Case(
            "form encoded", 415, content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"}
        ),
        Case("multipart", 415, content=b"--x--", headers={"Content-Type": "multipart/form-data; boundary=x"}),
        Case("GET on an ingest route", 405, method="GET"),
        Case("unknown route", 404, method="GET", path="/v1/evnts/nope"),
        Case("event type never registered", 404, json=attempt(), path="/v1/events/no.such_type"),
        Case(
            "Idempotency-Key of 201 characters", 422, json=attempt(), headers={"Idempotency-Key": "k" * 201}
        ),
        Case("malformed traceparent is ignored", 202, json=attempt(), headers={"traceparent": "not-a-trace"}),
        Case("event_type of another endpoint", 422, json=attempt(event_type="session")),
        Case(
            "batch item with an unknown event_type",
            207,
            path="/v1/events/batch",
            json={"events": [{"event_type": "admin"}]},
        ),
        Case(
            "batch items whose event_type is not text",
            207,
            path="/v1/events/batch",
            json={
                "events": [{"event_type": ["workflow.x"]}, {"event_type": {"a": 1}}, {"event_type": 5}, {}]
            },
        ),
        Case(
            "event_id not a UUID",
            422,
            json=attempt(event_id="../../etc/passwd"),
            check=_names_field("event_id"),
        ),
    ]


def _assert_equal(left: object, right: object) -> None:
    assert left == right


async def test_hostile_requests_get_exact_answers_and_lose_nothing(
    secured: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, settings = secured
    accepted: dict[str, set[str]] = {
        settings.kafka_topic_attempts: set(),
        settings.kafka_topic_sessions: set(),
    }
    table, wrong = [], []
    for case in _hostile_cases():
        response = await case.send(client)
        table.append(f"{response.status_code}  {case.name}")
        if response.status_code != case.status:
            wrong.append(f"{case.name}: {response.status_code} (wanted {case.status}) {response.text[:300]}")
        elif case.check is not None:
            try:
                case.check(response)
            except AssertionError as exc:
                wrong.append(f"{case.name}: {exc}")
        assert response.status_code < 500, f"{case.name}: {response.text}"
        assert "Traceback" not in response.text
        assert response.headers.get("x-request-id")
        _collect(response, accepted, settings)
        # The service still serves after every hostile request.
        valid = await client.post("/v1/events/attempts", json=attempt(), headers=_auth(INGEST_KEY))
        assert valid.status_code == 202, f"after {case.name}: {valid.text}"
        _collect(valid, accepted, settings)
    print("\n[hostile] " + "\n[hostile] ".join(table))
    assert wrong == []
    for topic, ids in accepted.items():
        records = read_topic(settings.kafka_brokers, topic, expected=len(ids))
        arrived = {record.headers["event_id"].decode() for record in records}
        assert ids <= arrived, f"{topic}: {len(ids - arrived)} accepted events missing"
    print(f"[hostile] cases={len(table)} accepted events={sum(map(len, accepted.values()))} missing=0")


def _collect(response: httpx.Response, accepted: dict[str, set[str]], settings: Settings) -> None:
    if response.status_code not in (202, 207):
        return
    body = response.json()
    items = body.get("results", [body])
    for item in items:
        if item.get("status") == "accepted":
            for topic in item["topics"]:
                if topic in accepted:
                    accepted[topic].add(item["event_id"])


async def test_api_keys_through_the_admin_api(
    secured: tuple[httpx.AsyncClient, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = secured
    admin = _auth(ADMIN_KEY)
    with caplog.at_level(logging.DEBUG):
        created = await client.post(
            "/admin/api-keys",
            json={"name": "mobile", "scopes": ["ingest"], "event_types": ["activity"]},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        assert created.json()["prefix"] == key[:10]
        posted = await client.post("/v1/events/activities", json=activity_event(), headers={"X-API-Key": key})
        assert posted.status_code == 202
        refused = await client.post("/v1/events/attempts", json=attempt(), headers={"X-API-Key": key})
        assert refused.status_code == 403
        listed = await client.get("/admin/api-keys", headers=admin)
        assert key not in listed.text
        names = {item["name"]: item for item in listed.json()}
        assert names["mobile"]["source"] == "database"
        assert names["ops"]["source"] == "config"
        revoked = await client.delete(f"/admin/api-keys/{created.json()['id']}", headers=admin)
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"]
        after = await client.post("/v1/events/activities", json=activity_event(), headers={"X-API-Key": key})
        assert after.status_code == 401
        assert after.json()["detail"] == "API key revoked"
        assert (await client.delete("/admin/api-keys/config:ops", headers=admin)).status_code == 409
        assert (await client.delete("/admin/api-keys/key_nope", headers=admin)).status_code == 404
        bad = await client.post("/admin/api-keys", json={"name": "x", "scopes": ["root"]}, headers=admin)
        assert bad.status_code == 422
    logged = "\n".join(f"{record.getMessage()} {vars(record)}" for record in caplog.records)
    assert "api_key.create" in logged  # the audit trail's log line
    for secret in (key, ADMIN_KEY, INGEST_KEY):
        assert secret not in logged


async def test_a_key_created_on_one_instance_works_on_another(make_settings: SettingsFactory) -> None:
    settings = make_settings(
        auth_enabled=True,
        api_keys=[{"name": "ops", "key": ADMIN_KEY, "scopes": ["admin"]}],
        api_keys_refresh_interval="200ms",
    )
    async with running(create_app(settings)) as first, running(create_app(settings)) as second:
        created = await first.post(
            "/admin/api-keys", json={"name": "shared", "scopes": ["ingest"]}, headers=_auth(ADMIN_KEY)
        )
        key = created.json()["key"]
        assert await _eventually_status(second, key, 202)
        await first.delete(f"/admin/api-keys/{created.json()['id']}", headers=_auth(ADMIN_KEY))
        assert await _eventually_status(second, key, 401)


async def _eventually_status(client: httpx.AsyncClient, key: str, status: int) -> bool:
    import asyncio

    for _ in range(50):
        response = await client.post("/v1/events/activities", json=activity_event(), headers=_auth(key))
        if response.status_code == status:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_rate_limit_answers_429_with_retry_after(secured: tuple[httpx.AsyncClient, Settings]) -> None:
    client, _ = secured
    answers = [
        (await client.post("/v1/events/activities", json=activity_event(), headers=_auth(SLOW_KEY)))
        for _ in range(4)
    ]
    assert [answer.status_code for answer in answers] == [202, 202, 202, 429]
    limited = answers[-1]
    assert limited.json()["code"] == "rate_limited"
    assert limited.json()["retriable"] is True
    assert int(limited.headers["Retry-After"]) >= 1
    # Other keys are not affected.
    other = await client.post("/v1/events/activities", json=activity_event(), headers=_auth(INGEST_KEY))
    assert other.status_code == 202


async def test_metrics_can_be_public_and_probes_are_always_open(make_settings: SettingsFactory) -> None:
    settings = make_settings(auth_enabled=True, metrics_public=True)
    async with running(create_app(settings)) as client:
        assert (await client.get("/metrics/prometheus")).status_code == 200
        assert (await client.get("/metrics/publisher")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/admin/routing-rules")).status_code == 401
        assert (await client.post("/v1/events/attempts", json=attempt())).status_code == 401


async def test_5xx_bodies_carry_the_request_id_that_the_logs_carry(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings())

    async def broken() -> None:
        raise RuntimeError("secret internal detail")

    app.add_api_route("/boom", broken)
    # Starlette re-raises after answering 500 (for servers to log); the transport must not.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        with caplog.at_level(logging.ERROR):
            response = await client.get("/boom", headers={"X-Request-ID": "trace-me-42"})
    assert response.status_code == 500
    body = response.json()
    assert body["request_id"] == "trace-me-42" == response.headers["x-request-id"]
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text
    assert any(getattr(record, "request_id", None) == "trace-me-42" for record in caplog.records)


async def test_auth_off_is_announced_loudly(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        async with running(create_app(make_settings(auth_enabled=False))) as client:
            assert (await client.get("/admin/routing-rules")).status_code == 200
    assert any("AUTHENTICATION IS OFF" in record.getMessage() for record in caplog.records)


async def test_unknown_fields_can_be_ignored(make_settings: SettingsFactory) -> None:
    settings = make_settings(unknown_fields="ignore")
    async with running(create_app(settings)) as client:
        single = await client.post("/v1/events/attempts", json=attempt(client_version="9.1"))
        assert single.status_code == 202, single.text
        batch = await client.post(
            "/v1/events/batch", json={"events": [{"event_type": "activity", **activity_event(extra=1)}]}
        )
        assert batch.status_code == 202, batch.text
    (record,) = read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=1)
    assert b"extra" not in record.value


async def test_kafka_secrets_appear_in_no_log_metric_or_answer(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The development broker speaks plaintext only, so a SASL client fails to authenticate: the
    # errors that follow (logged, counted, answered) must not carry the password.
    password = "s3cr3t-" + os.urandom(8).hex()
    settings = make_settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="ingest",
        kafka_sasl_password=password,
        kafka_producer_config={"SASL_OAUTHBEARER_CONFIG": "secret-" + password},
        kafka_producer_timeout="1s",
        kafka_producer_retries=0,
    )
    with caplog.at_level(logging.DEBUG):
        async with running(create_app(settings)) as client:
            answers = [
                await client.post("/v1/events/attempts", json=attempt()),
                await client.get("/metrics/publisher"),
                await client.get("/metrics/publisher/health"),
                await client.get("/metrics/prometheus"),
                await client.get("/readyz"),
                await client.get("/admin/topics"),
            ]
    assert answers[0].status_code in (202, 503)  # spooled (or refused), never a 5xx with details
    shown = "\n".join(answer.text for answer in answers)
    logged = "\n".join(f"{record.getMessage()} {vars(record)}" for record in caplog.records)
    assert password not in shown
    assert password not in logged
