"""Requests refused before any publishing: size limits, gzip bombs, content types.

These never reach Kafka, so the app is built without starting its producer.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from app.config.settings import load_settings
from app.factory import create_app
from tests.conftest import activity_event


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        _env_file=None, kafka_brokers="127.0.0.1:1", max_request_bytes=4096, auth_enabled=False
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events/activities",
        content=b"{" + b" " * 5000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_gzip_bomb_is_413_not_memory(client: httpx.AsyncClient) -> None:
    bomb = gzip.compress(b" " * 3_000_000)  # 3 MB that packs into under 4 KiB
    assert len(bomb) < 4096
    response = await client.post(
        "/v1/events/activities",
        content=bomb,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 413


async def test_broken_gzip_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events/activities",
        content=b"not gzip",
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 400
    assert "gzip" in response.json()["detail"]


async def test_unknown_content_encoding_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events/activities",
        content=orjson.dumps(activity_event()),
        headers={"content-type": "application/json", "content-encoding": "br"},
    )
    assert response.status_code == 415


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
async def test_non_json_content_type_is_415(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.post(
        "/v1/events/activities",
        content=orjson.dumps(activity_event()),
        headers={"content-type": content_type},
    )
    assert response.status_code == 415
    assert response.json()["detail"] == "Content-Type must be application/json"


async def test_malformed_json_is_422_and_names_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events/activities", content=b'{"user_id": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_unknown_route_is_404_with_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found", "code": "not_found", "retriable": False}
