"""Load shedding: past MAX_CONCURRENT_REQUESTS ingest requests in progress, answer 503 at once.

MAX_IN_FLIGHT_RECORDS bounds what waits for Kafka, but only after a request's body has been read,
parsed and validated: under a flood of connections, those requests alone (a parsed batch of 100
events is a few hundred KB) would grow the worker's memory and every request's latency. This
plain ASGI middleware refuses the excess before any body is read, with `Retry-After`, so memory
stays bounded and the requests it does take stay fast. Per worker process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response

INGEST_PREFIX = "/v1/events"
RETRY_AFTER_SECONDS = 1


class IngestSlots:
    """The ingest requests in progress in this worker, against MAX_CONCURRENT_REQUESTS: shared by
    the middleware and the single-event fast path (app/api/fast_ingest.py), which count alike."""

    def __init__(self, limit: int, registry: CollectorRegistry) -> None:
        self.limit = limit  # 0: no limit
        self.in_progress = 0
        self.shed = Counter(
            "event_ingest_requests_shed_total",
            "Ingest requests answered 503 `overloaded` because MAX_CONCURRENT_REQUESTS were in progress.",
            registry=registry,
        )

    @property
    def full(self) -> bool:
        return bool(self.limit) and self.in_progress >= self.limit


class LoadSheddingMiddleware:
    def __init__(self, app: ASGIApp, slots: IngestSlots) -> None:
        self.app = app
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slots = self.slots
        if not slots.limit or scope["type"] != "http" or not scope["path"].startswith(INGEST_PREFIX):
            await self.app(scope, receive, send)
            return
        if slots.full:
            slots.shed.inc()
            response = error_response(
                503,
                f"more than {slots.limit} requests in progress; retry after the Retry-After seconds",
                "overloaded",
                retriable=True,
                retry_after=RETRY_AFTER_SECONDS,
            )
            await response(scope, receive, send)
            return
        slots.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            slots.in_progress -= 1
