"""`create_app(settings)`: builds one complete app; tests build as many as they like."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import disable_created_metrics, multiprocess
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.types import Receive, Scope, Send

from app.api import (
    admin_audit,
    admin_dlq,
    admin_kafka,
    admin_keys,
    admin_publisher,
    admin_rules,
    event_types,
    operations,
)
from app.api.auth import AUTH_RESPONSES, AuthMiddleware
from app.api.docs import install_offline_docs
from app.api.errors import install_error_handlers
from app.api.events import events_router
from app.api.fast_ingest import FastIngestPath, routed_here
from app.api.load_shedding import IngestSlots, LoadSheddingMiddleware
from app.api.openapi import customize_openapi
from app.api.request_id import RequestIdMiddleware
from app.api.responses import JsonResponse
from app.config.settings import Settings, load_settings
from app.console.app import Console, install_console
from app.observability.http_metrics import HttpMetrics, HttpMetricsMiddleware
from app.observability.tracing import UNTRACED_URLS
from app.runtime import Runtime

logger = logging.getLogger(__name__)

GC_GEN0_THRESHOLD = 50_000
METRICS_PATH = "/metrics/prometheus"
# http_request_duration_seconds: fine enough around the 50 ms / 500 ms the alerts and targets name.
HTTP_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

DESCRIPTION = """
Validates learning events (attempts, sessions, placements, activities), routes them by rules to Kafka
topics and publishes them. A 2xx answer means Kafka acknowledged the event (`acks=all`).

Errors share one shape: `{"detail", "code", "retriable"}`; 429 and 503 carry `Retry-After`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Without `settings`, read them from the environment and `.env`."""
    settings = settings or load_settings()
    disable_created_metrics()  # type: ignore[no-untyped-call]  # `*_created` series double the scrape size and nobody graphs them
    runtime = Runtime.build(settings)
    console: Console | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        if console is not None:
            console.history.start()
        # Move everything built at start-up out of the collector's sight, and collect the young
        # generation less often: with many small objects per request, gen-0 collections cost ~10%.
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
        logger.info(
            "publisher started",
            extra={"brokers": settings.kafka_brokers, "serialization": settings.kafka_serialization},
        )
        restore = _drain_on_sigterm(runtime)
        try:
            yield
        finally:
            restore()
            if console is not None:
                await console.history.stop()
            left = await runtime.stop()
            if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # this worker's live gauges stop counting
                multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
            if left:
                logger.error("records not flushed at shutdown", extra={"records": left})
            logger.info("publisher stopped")

    app = EventIngestApp(
        title="Event ingest",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JsonResponse,
        docs_url=None,  # served from the service's own assets: install_offline_docs
        redoc_url=None,
        **_without_native_telemetry(),
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    # The ingest routes go straight into the app's own route list, first: newer FastAPI keeps an
    # included router whole and walks into it on every request (~5 % of a single event's CPU).
    app.router.routes[:0] = events_router(settings).routes
    app.include_router(operations.router)
    install_offline_docs(app)
    if settings.console_enabled:
        console = install_console(app, runtime)
    app.include_router(event_types.producer_router, responses=AUTH_RESPONSES)
    for admin in (admin_rules, event_types, admin_keys, admin_publisher, admin_kafka, admin_dlq, admin_audit):
        app.include_router(admin.router, responses=AUTH_RESPONSES)
    # Middleware runs outside in: request id first (so every log line and answer has it), then the
    # request's trace span (with OTEL_EXPORTER_OTLP_ENDPOINT), the HTTP metrics (so refusals are
    # counted), load shedding (before any work is spent on an excess request), then authentication.
    slots = IngestSlots(
        settings.max_concurrent_requests,
        runtime.registry,
        max_queued=settings.max_queued_requests,
        queue_timeout=settings.request_queue_timeout.total_seconds(),
    )
    http_metrics = HttpMetrics(runtime.registry, HTTP_LATENCY_BUCKETS)
    app.add_middleware(
        AuthMiddleware,
        ring=runtime.keys,
        registry=runtime.registry,
        enabled=settings.auth_enabled,
        metrics_public=settings.metrics_public,
    )
    app.add_middleware(LoadSheddingMiddleware, slots=slots)
    app.add_middleware(
        HttpMetricsMiddleware,
        metrics=http_metrics,
        routes=app.router.routes,  # the list itself: read when the middleware stack is built
        excluded=[METRICS_PATH],
    )
    Instrumentator(registry=runtime.registry).expose(
        app,
        endpoint=METRICS_PATH,
        tags=["operations"],
        summary="Prometheus metrics (text exposition format; summed over workers when WORKERS > 1)",
        response_class=PlainTextResponse,
        responses=AUTH_RESPONSES,
    )
    if runtime.tracing.enabled:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app.add_middleware(
            OpenTelemetryMiddleware,
            tracer_provider=runtime.tracing.provider,
            excluded_urls=UNTRACED_URLS,
            exclude_spans=["receive", "send"],
        )
    app.add_middleware(RequestIdMiddleware)
    customize_openapi(app, settings.metrics_public)
    app.fast_ingest = FastIngestPath(
        functools.partial(FastAPI.__call__, app), runtime, settings, slots, http_metrics
    )
    return app


class EventIngestApp(FastAPI):
    """The service's FastAPI app, with the ordinary single-event request served by
    `FastIngestPath` ahead of the middleware stack (see app/api/fast_ingest.py)."""

    fast_ingest: FastIngestPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_ingest is not None and routed_here(scope):
            await self.fast_ingest(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _without_native_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry (in newer FastAPI) switched off: the service traces through its
    own middleware and provider (OTEL_EXPORTER_OTLP_ENDPOINT), and FastAPI's would check the
    global providers on every request (~6 µs) and could trace each request a second time."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _drain_on_sigterm(runtime: Runtime) -> Callable[[], None]:
    """On SIGTERM, run `runtime.drain()` before handing the signal on to the server (uvicorn).

    Only in the main thread's loop (the server's); returns a function that puts things back.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    server_handler = signal.getsignal(signal.SIGTERM)
    tasks: set[asyncio.Task[None]] = set()

    async def drain_then_stop() -> None:
        logger.info("SIGTERM: draining before shutdown")
        await runtime.drain()
        if callable(server_handler):
            server_handler(signal.SIGTERM, None)

    def on_sigterm() -> None:
        if not runtime.shutting_down:
            task = loop.create_task(drain_then_stop())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, server_handler)

    return restore
