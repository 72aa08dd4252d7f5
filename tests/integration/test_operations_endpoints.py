"""The metrics, health and probe routes answer with real counts after real traffic."""

from __future__ import annotations

import httpx
import pytest

from app.config.settings import Settings
from tests.conftest import activity_event, attempt

pytestmark = pytest.mark.integration


async def test_publisher_metrics_count_real_traffic(service: tuple[httpx.AsyncClient, Settings]) -> None:
    client, settings = service
    for quality in (5, 1, 4):
        assert (await client.post("/v1/events/attempts", json=attempt(quality=quality))).status_code == 202
    assert (await client.post("/v1/events/activities", json=activity_event())).status_code == 202

    metrics = (await client.get("/metrics/publisher")).json()

    assert metrics["events_published"] == 6  # 3 attempts + 2 ML-training copies + 1 activity
    assert metrics["events_failed"] == 0
    assert metrics["success_rate"] == 1.0
    assert metrics["average_latency_ms"] > 0
    assert metrics["last_publish_time"] is not None
    assert metrics["topics"][settings.kafka_topic_attempts]["published"] == 3
    assert metrics["topics"][settings.kafka_topic_ml_training]["published"] == 2
    assert metrics["circuit_breaker"]["state"] == "closed"


async def test_health_is_healthy_after_traffic(service: tuple[httpx.AsyncClient, Settings]) -> None:
    client, _ = service
    await client.post("/v1/events/activities", json=activity_event())

    response = await client.get("/metrics/publisher/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert {check["name"] for check in body["checks"]} == {
        "publishing_activity",
        "error_rate",
        "dlq_rate",
        "circuit_breaker",
        "spool",
        "publisher_paused",
    }


async def test_prometheus_exposes_publisher_counters_and_http_metrics(
    service: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, settings = service
    await client.post("/v1/events/attempts", json=attempt(quality=5))
    await client.post("/v1/events/attempts", json=attempt(quality=9))

    text = (await client.get("/metrics/prometheus")).text

    assert f'event_ingest_events_published_total{{topic="{settings.kafka_topic_attempts}"}} 1.0' in text
    assert 'event_ingest_events_rejected_total{reason="validation"} 1.0' in text
    assert "event_ingest_publish_latency_seconds_bucket" in text
    assert "event_ingest_circuit_breaker_state 0.0" in text
    assert 'http_requests_total{handler="/v1/events/attempts",method="POST",status="2xx"} 1.0' in text


async def test_liveness_and_readiness(service: tuple[httpx.AsyncClient, Settings]) -> None:
    client, _ = service
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_openapi_documents_every_endpoint_with_examples(
    service: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, _ = service
    schema = (await client.get("/openapi.json")).json()

    paths = schema["paths"]
    for path in [
        "/v1/events/attempts",
        "/v1/events/sessions",
        "/v1/events/placements",
        "/v1/events/activities",
        "/v1/events/batch",
        "/metrics/publisher",
        "/metrics/publisher/health",
        "/metrics/prometheus",
        "/healthz",
        "/readyz",
    ]:
        assert path in paths, path
    for name in (
        "AttemptEvent",
        "SessionEvent",
        "PlacementEvent",
        "ActivityEvent",
        "EventAccepted",
        "BatchResult",
        "ErrorBody",
    ):
        assert schema["components"]["schemas"][name].get("examples"), name
    batch_body = paths["/v1/events/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert batch_body["examples"]
    assert (await client.get("/docs")).status_code == 200
