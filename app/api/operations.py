"""Operator routes: publisher metrics and health, liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from app.api.auth import AUTH_RESPONSES
from app.api.dependencies import RuntimeDep
from app.api.responses import JsonResponse
from app.observability.health import publisher_health

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics/publisher", summary="Publisher counters, rates and latency (JSON)", responses=AUTH_RESPONSES
)
async def publisher_metrics(runtime: RuntimeDep) -> dict[str, Any]:
    """Counts since this worker started: published, failed, retried, dead-lettered, unrouted, rejected;
    success/error/DLQ rates; average acknowledgement latency (exponential moving average); per topic.
    `scope` is `worker`: with several workers each answers for itself (Prometheus sums them)."""
    snapshot = runtime.metrics.snapshot()
    snapshot["circuit_breaker"] = {
        "state": runtime.breaker.state,
        "transitions": [{"at": at, "state": state} for at, state in runtime.breaker.transitions],
    }
    snapshot["queue_length"] = runtime.producer.queue_length()
    snapshot["in_flight"] = runtime.publisher.in_flight
    snapshot["paused"] = runtime.relay.pause.paused
    stats = runtime.spool.stats
    snapshot["spool"] = {
        "depth": stats.depth,
        "oldest_age_seconds": round(stats.oldest_age_seconds(), 3),
        "capacity": runtime.settings.spool_max_records,
    }
    return snapshot


@router.get(
    "/metrics/publisher/health",
    summary="Publisher health: healthy, degraded or unhealthy, with named checks",
    responses={503: {"description": "unhealthy"}, **AUTH_RESPONSES},
)
async def publisher_health_route(runtime: RuntimeDep) -> Response:
    """Checks over the last HEALTH_ACTIVITY_WINDOW: publishing activity, error rate, DLQ rate, the
    circuit breaker and the spool. 200 when healthy or degraded, 503 when unhealthy."""
    settings = runtime.settings
    body = publisher_health(
        runtime.metrics,
        runtime.breaker.state,
        settings.health_activity_window.total_seconds(),
        settings.health_error_rate_threshold,
        settings.health_dlq_rate_threshold,
        runtime.spool.stats,
        settings.spool_max_records,
        paused=runtime.relay.pause.paused,
    )
    return JsonResponse(body, status_code=503 if body["status"] == "unhealthy" else 200)


@router.get("/healthz", summary="Liveness: the process serves HTTP")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz",
    summary="Readiness: Kafka is reachable and the service is not shutting down",
    responses={503: {"description": "not ready"}},
)
async def readyz(runtime: RuntimeDep) -> Response:
    readiness = await runtime.check_ready()
    body = {"status": "ready" if readiness.ready else "not_ready", "reason": readiness.reason}
    return JsonResponse(body, status_code=200 if readiness.ready else 503)
