"""The two HTTP metrics the alerts and the dashboard use, kept by one plain ASGI middleware (and by
the single-event fast path, app/api/fast_ingest.py, for the requests it serves).

`http_requests_total{handler,method,status}` (status grouped as 2xx, 4xx, ...) and
`http_request_duration_seconds{handler,method}`: the names, labels and help texts of
prometheus-fastapi-instrumentator, which still serves `/metrics/prometheus`. Its middleware is
not used: per request it scanned every route to name the handler and built a Request, a Response
and a coroutine gather, about a tenth of a single event's CPU. Here the handler of a path without
parameters (every ingest route) is one dict lookup; other paths are matched against the routes
as before. `handler` is the route's path template, or "none" for a path no route knows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "none"
_STATUS_CLASS = {digit: f"{digit}xx" for digit in range(1, 6)}


class HttpMetrics:
    """The two series, shared by the middleware and the single-event fast path (app/api/fast_ingest.py)."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self.requests = Counter(
            "http_requests_total",
            "Total number of requests by method, status and handler.",
            ["handler", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Duration of HTTP requests in seconds",
            ["handler", "method"],
            buckets=buckets,
            registry=registry,
        )
        # Bounded: handlers are route templates or "none"; methods are those the HTTP parser knows.
        self.children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, handler: str, method: str, status: int, seconds: float) -> None:
        series = (handler, method, status // 100)
        children = self.children.get(series)
        if children is None:  # labels() takes a lock and builds a key: once per series, not per request
            status_class = _STATUS_CLASS.get(status // 100, str(status))
            children = self.children[series] = (
                self.requests.labels(handler, method, status_class),
                self.duration.labels(handler, method),
            )
        children[0].inc()
        children[1].observe(seconds)


class HttpMetricsMiddleware:
    def __init__(
        self, app: ASGIApp, metrics: HttpMetrics, routes: Sequence[BaseRoute], excluded: Iterable[str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = list(flat_routes(routes))
        self.static = frozenset(
            path for path in (_path(route) for route in self.routes) if path and "{" not in path
        )
        self.excluded = frozenset(excluded)

    def handler(self, scope: Scope) -> str:
        """The path template of the route serving this request (also when it is refused before routing)."""
        path: str = scope["path"]
        if path in self.static:  # a route without parameters: its template is the path
            return path
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return _path(route) or UNMATCHED
            if match is Match.PARTIAL and partial is None:  # the path matches, the method does not
                partial = _path(route)
        return partial or UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handler = self.handler(scope)
        if handler in self.excluded:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer started is answered 500 outside us

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            self.metrics.observe(handler, scope["method"], status, time.perf_counter() - started)


def flat_routes(routes: Iterable[Any]) -> Iterator[BaseRoute]:
    """Every route, looking inside FastAPI's included routers (which newer FastAPI keeps whole
    rather than copying their routes into the app; their paths already carry the router's prefix)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from flat_routes(included.routes)
        else:
            yield route


def _path(route: BaseRoute) -> str | None:
    path: str | None = getattr(route, "path", None)
    return path
