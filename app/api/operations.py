"""Operator routes: publisher metrics and health, liveness and readiness."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from app.api.auth import AUTH_RESPONSES
from app.api.dependencies import RuntimeDep
from app.api.responses import JsonResponse
from app.observability import service_view
from app.observability.health import publisher_health
from app.observability.publisher_metrics import iso_time
from app.runtime import Runtime

router = APIRouter(tags=["operations"])

Scope = Literal["service", "worker"]
SCOPE_QUERY = Query(
    "service",
    description="`service`: every worker of this instance (counts summed, rates and latency combined, "
    "each worker's breaker and queue listed); `worker`: only the worker that answers.",
)


def _shared_state(runtime: Runtime) -> dict[str, Any]:
    """What the workers share (the spool, the pause flag): the same whichever answers."""
    stats = runtime.spool.stats
    return {
        "paused": runtime.relay.pause.paused,
        "spool": {
            "depth": stats.depth,
            "oldest_age_seconds": round(stats.oldest_age_seconds(), 3),
            "capacity": runtime.settings.spool_max_records,
        },
    }


async def _reports(runtime: Runtime) -> list[dict[str, Any]]:
    """This worker's report (built here, on the event loop that owns its state), then the other
    live workers' (read from their files in a thread)."""
    own = runtime.worker_report()
    if runtime.worker_reports is None:
        return [own]
    return [own, *await asyncio.to_thread(runtime.worker_reports.others)]


@router.get(
    "/metrics/publisher", summary="Publisher counters, rates and latency (JSON)", responses=AUTH_RESPONSES
)
async def publisher_metrics(runtime: RuntimeDep, scope: Scope = SCOPE_QUERY) -> dict[str, Any]:
    """Counts since the service (or, `scope=worker`, this worker) started: published, failed, retried,
    dead-lettered, unrouted, rejected; success/error/DLQ rates; average acknowledgement latency
    (exponential moving average; over workers, weighted by what each published); per topic; the
    circuit breaker (the worst worker's state), producer queue and records in flight, and under
    `workers` each worker's own as of its last report (`reported_at`, at most about a second old;
    the counts above are exact). `pid` is the worker that answered."""
    if scope == "worker":
        own = runtime.worker_report()
        return {
            **runtime.metrics.snapshot(),
            "circuit_breaker": own["circuit_breaker"],
            "queue_length": own["queue_length"],
            "in_flight": own["in_flight"],
            **_shared_state(runtime),
        }
    directory = service_view.multiprocess_directory()
    counts = (
        await asyncio.to_thread(service_view.summed_counts, directory)
        if directory is not None
        else runtime.metrics.counts()
    )
    reports = await _reports(runtime)
    return {
        "scope": "service",
        "pid": os.getpid(),
        **counts.as_json(),
        "average_latency_ms": service_view.combined_latency_ms(reports),
        "last_publish_time": iso_time(service_view.latest_publish(reports)),
        "circuit_breaker": {
            "state": service_view.worst_breaker_state([r["circuit_breaker"]["state"] for r in reports]),
            "transitions": service_view.merged_transitions(reports),
        },
        "queue_length": sum(r["queue_length"] for r in reports),
        "in_flight": sum(r["in_flight"] for r in reports),
        **_shared_state(runtime),
        "workers": [
            {
                key: r[key]
                for key in (
                    "pid",
                    "reported_at",
                    "circuit_breaker",
                    "queue_length",
                    "in_flight",
                    "events_published",
                )
            }
            for r in sorted(reports, key=lambda r: int(r["pid"]))
        ],
    }


@router.get(
    "/metrics/publisher/health",
    summary="Publisher health: healthy, degraded or unhealthy, with named checks",
    responses={503: {"description": "unhealthy"}, **AUTH_RESPONSES},
)
async def publisher_health_route(runtime: RuntimeDep, scope: Scope = SCOPE_QUERY) -> Response:
    """Checks over the last HEALTH_ACTIVITY_WINDOW: publishing activity, error rate, DLQ rate, the
    circuit breaker and the spool. 200 when healthy or degraded, 503 when unhealthy. Over the whole
    service by default (every worker's window added up, the worst breaker); `scope=worker` for the
    worker that answers."""
    settings = runtime.settings
    reports = [runtime.worker_report()] if scope == "worker" else await _reports(runtime)
    body = publisher_health(
        service_view.combined_recent(reports),
        service_view.latest_publish(reports),
        service_view.worst_breaker_state([r["circuit_breaker"]["state"] for r in reports]),
        settings.health_activity_window.total_seconds(),
        settings.health_error_rate_threshold,
        settings.health_dlq_rate_threshold,
        runtime.spool.stats,
        settings.spool_max_records,
        paused=runtime.relay.pause.paused,
    )
    body = {"scope": scope, "workers": len(reports), **body}
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
