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


class LoadSheddingMiddleware:
    def __init__(self, app: ASGIApp, limit: int, registry: CollectorRegistry) -> None:
        self.app = app
        self.limit = limit  # 0: no limit
        self.in_progress = 0
        self.shed = Counter(
            "event_ingest_requests_shed_total",
            "Ingest requests answered 503 `overloaded` because MAX_CONCURRENT_REQUESTS were in progress.",
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.limit or scope["type"] != "http" or not scope["path"].startswith(INGEST_PREFIX):
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            self.shed.inc()
            response = error_response(
                503,
                f"more than {self.limit} requests in progress; retry after the Retry-After seconds",
                "overloaded",
                retriable=True,
                retry_after=RETRY_AFTER_SECONDS,
            )
            await response(scope, receive, send)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1
