"""HTTP metrics: each request counted once under its route's path template, refusals included."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from app.observability.http_metrics import HttpMetrics, HttpMetricsMiddleware


class RefuseAdmin:
    """Answers /admin/... 401 before routing, like the authentication middleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/admin"):
            await JSONResponse({"detail": "no"}, status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _app(registry: CollectorRegistry) -> FastAPI:
    app = FastAPI()
    admin = APIRouter(prefix="/admin")

    @admin.delete("/keys/{key_id}")
    async def delete_key(key_id: str) -> dict[str, str]:
        return {"deleted": key_id}

    @app.post("/v1/events/attempts", status_code=202)
    async def ingest() -> dict[str, str]:
        return {"status": "accepted"}

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @app.get("/metrics")
    async def metrics() -> dict[str, str]:
        return {}

    app.include_router(admin)
    app.add_middleware(RefuseAdmin)
    app.add_middleware(
        HttpMetricsMiddleware,
        metrics=HttpMetrics(registry, buckets=(0.1, 1.0)),
        routes=app.router.routes,
        excluded=["/metrics"],
    )
    return app


def _lines(registry: CollectorRegistry) -> set[str]:
    text = generate_latest(registry).decode()
    return {line for line in text.splitlines() if line.startswith("http_requests_total{")}


async def test_requests_are_counted_by_route_template_status_class_and_method() -> None:
    registry = CollectorRegistry()
    transport = httpx.ASGITransport(app=_app(registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        assert (await client.post("/v1/events/attempts")).status_code == 202
        assert (await client.post("/v1/events/attempts")).status_code == 202
        assert (await client.get("/v1/events/attempts")).status_code == 405
        assert (await client.get("/items/42")).status_code == 200
        assert (await client.delete("/admin/keys/k1")).status_code == 401  # refused before routing
        assert (await client.get("/nowhere")).status_code == 404
        assert (await client.get("/metrics")).status_code == 200  # excluded

    assert _lines(registry) == {
        'http_requests_total{handler="/v1/events/attempts",method="POST",status="2xx"} 2.0',
        'http_requests_total{handler="/v1/events/attempts",method="GET",status="4xx"} 1.0',
        'http_requests_total{handler="/items/{item_id}",method="GET",status="2xx"} 1.0',
        'http_requests_total{handler="/admin/keys/{key_id}",method="DELETE",status="4xx"} 1.0',
        'http_requests_total{handler="none",method="GET",status="4xx"} 1.0',
    }
    text = generate_latest(registry).decode()
    assert 'http_request_duration_seconds_count{handler="/v1/events/attempts",method="POST"} 2.0' in text
    assert 'handler="/metrics"' not in text


async def test_an_exception_is_counted_as_a_5xx() -> None:
    registry = CollectorRegistry()
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_middleware(
        HttpMetricsMiddleware,
        metrics=HttpMetrics(registry, buckets=(1.0,)),
        routes=app.router.routes,
        excluded=[],
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        assert (await client.get("/boom")).status_code == 500

    assert _lines(registry) == {'http_requests_total{handler="/boom",method="GET",status="5xx"} 1.0'}
