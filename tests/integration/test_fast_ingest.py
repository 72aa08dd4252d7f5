"""The single-event fast path answers exactly as the full stack does, and takes only the ordinary request."""

from __future__ import annotations

import gzip
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import generate_latest
from starlette.types import Receive, Scope, Send

from app.api.fast_ingest import FastIngestPath
from app.factory import EventIngestApp, create_app
from tests.conftest import SettingsFactory, attempt, running, session_event

pytestmark = pytest.mark.integration

INGEST_KEY = "web-" + os.urandom(12).hex()
ADMIN_KEY = "ops-" + os.urandom(12).hex()
ATTEMPTS_ONLY_KEY = "quiz-" + os.urandom(12).hex()
MAX_BYTES = 16 * 1024


@dataclass
class Case:
    name: str
    fast: bool  # taken by the fast path (else handed to the full stack)
    path: str = "/v1/events/attempts"
    key: str | None = INGEST_KEY
    body: Callable[[], bytes] = lambda: orjson.dumps(attempt())
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    times: int = 1  # sent this often (the same body), each answer compared
    idempotency_key: bool = False  # a new Idempotency-Key for each send()

    async def send(self, client: httpx.AsyncClient) -> list[httpx.Response]:
        headers = {"Content-Type": "application/json", **self.headers}
        if self.idempotency_key:
            headers["Idempotency-Key"] = "k-" + os.urandom(6).hex()
        if self.key is not None:
            headers.setdefault("Authorization", f"Bearer {self.key}")
        body = self.body()
        url = self.path + (f"?{self.query}" if self.query else "")
        return [await client.post(url, content=body, headers=headers) for _ in range(self.times)]


def _old_attempt() -> bytes:
    return orjson.dumps(attempt(occurred_at=(datetime.now(UTC) - timedelta(days=400)).isoformat()))


CASES = [
    Case("valid attempt", fast=True),
    Case("the same attempt twice: duplicate", fast=True, times=2),
    Case("valid session", fast=True, path="/v1/events/sessions", body=lambda: orjson.dumps(session_event())),
    Case("X-API-Key", fast=True, key=None, headers={"X-API-Key": INGEST_KEY}),
    Case("ack=spool", fast=True, query="ack=spool"),
    Case("ack=kafka", fast=True, query="ack=kafka"),
    Case("client's request id", fast=True, headers={"X-Request-ID": "req-42"}),
    Case("insane request id replaced", fast=True, headers={"X-Request-ID": "bad id!"}),
    Case("idempotency key repeated", fast=True, idempotency_key=True, times=2),
    Case("+json media type", fast=True, headers={"Content-Type": "application/vnd.api+json; charset=utf-8"}),
    Case("too old: refused by the time window", fast=True, body=_old_attempt),
    Case("no key", fast=False, key=None),
    Case("unknown key", fast=False, key="eik_nope"),
    Case("key without the ingest scope", fast=False, key=ADMIN_KEY),
    Case(
        "key limited to attempts posting a session",
        fast=False,
        path="/v1/events/sessions",
        key=ATTEMPTS_ONLY_KEY,
        body=lambda: orjson.dumps(session_event()),
    ),
    # Case.send puts X-API-Key before Authorization: the first key sent counts, as in the middleware.
    Case("both key headers", fast=True, headers={"X-API-Key": INGEST_KEY}),
    Case("both key headers, the first unknown", fast=False, headers={"X-API-Key": "eik_nope"}),
    Case("invalid event", fast=False, body=lambda: orjson.dumps(attempt(quality=9))),
    Case("unknown field", fast=False, body=lambda: orjson.dumps(attempt(colour="red"))),
    Case("malformed JSON", fast=False, body=lambda: b'{"user_id": '),
    Case("duplicate key", fast=False, body=lambda: b'{"quality": 1, "quality": 5}'),
    Case("not UTF-8", fast=False, body=lambda: b'{"user_id": "\xff"}'),
    Case("empty body", fast=False, body=lambda: b""),
    Case("a list", fast=False, body=lambda: b"[]"),
    Case("text/plain", fast=False, headers={"Content-Type": "text/plain"}),
    Case(
        "gzip",
        fast=False,
        headers={"Content-Encoding": "gzip"},
        body=lambda: gzip.compress(orjson.dumps(attempt())),
    ),
    Case("brotli", fast=False, headers={"Content-Encoding": "br"}),
    Case("over the limit", fast=False, body=lambda: orjson.dumps(attempt(item_id="x" * MAX_BYTES))),
    Case("ack unknown", fast=False, query="ack=soon"),
    Case("another query", fast=False, query="debug=1"),
    Case("idempotency key too long", fast=False, headers={"Idempotency-Key": "k" * 201}),
]


@pytest.fixture
async def app(make_settings: SettingsFactory) -> AsyncIterator[EventIngestApp]:
    settings = make_settings(
        auth_enabled=True,
        api_keys=[
            {"name": "ops", "key": ADMIN_KEY, "scopes": ["admin", "metrics"]},
            {"name": "web", "key": INGEST_KEY, "scopes": ["ingest"]},
            {"name": "quiz", "key": ATTEMPTS_ONLY_KEY, "scopes": ["ingest"], "event_types": ["attempt"]},
        ],
        max_request_bytes=MAX_BYTES,
    )
    app = create_app(settings)
    assert isinstance(app, EventIngestApp)
    async with running(app):
        yield app


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """Status, headers and body, with what differs by nature (ids, lengths) masked."""
    headers = {name: value for name, value in response.headers.items() if name != "content-length"}
    if "x-request-id" in headers and headers["x-request-id"] != "req-42":
        headers["x-request-id"] = "<generated>"
    body = response.json() if response.content else None
    if isinstance(body, dict):
        body = {name: "<id>" if name in {"event_id", "request_id"} else value for name, value in body.items()}
    return response.status_code, headers, body


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_the_fast_path_answers_as_the_full_stack_does(app: EventIngestApp, case: Case) -> None:
    fast = app.fast_ingest
    assert fast is not None
    handed_on = 0
    full = fast.full

    async def counting_full(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal handed_on
        handed_on += 1
        await full(scope, receive, send)

    fast.full = counting_full
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        with_fast_path = await case.send(client)
        app.fast_ingest = None
        try:
            without = await case.send(client)
        finally:
            app.fast_ingest = fast

    assert [_comparable(r) for r in with_fast_path] == [_comparable(r) for r in without], case.name
    assert handed_on == (0 if case.fast else case.times)
    assert fast.slots.in_progress == 0


async def test_the_fast_path_counts_in_the_http_metrics_and_answers_500_on_a_fault(
    app: EventIngestApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = app.fast_ingest
    assert isinstance(fast, FastIngestPath)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {INGEST_KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for _ in range(3):
            assert (
                await client.post("/v1/events/attempts", json=attempt(), headers=headers)
            ).status_code == 202

        async def broken(*args: object, **kwargs: object) -> Awaitable[None]:
            raise RuntimeError("the ingest service broke")

        monkeypatch.setattr(fast.runtime.ingest, "ingest_one", broken)
        response = await client.post(
            "/v1/events/attempts", json=attempt(), headers={**headers, "X-Request-ID": "req-500"}
        )

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-500"
    assert response.json()["request_id"] == "req-500"
    assert response.json()["code"] == "internal_error"
    assert "broke" not in response.text
    text = generate_latest(fast.runtime.registry).decode()
    assert 'http_requests_total{handler="/v1/events/attempts",method="POST",status="2xx"} 3.0' in text
    assert 'http_requests_total{handler="/v1/events/attempts",method="POST",status="5xx"} 1.0' in text
    assert fast.slots.in_progress == 0
