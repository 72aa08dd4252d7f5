"""Authentication and scopes, checked before a request's body is read.

A plain ASGI middleware in front of every route: the scope a path needs is decided here, in one
place, so no route can be forgotten. `/v1/events` needs `ingest`, `/admin` needs `admin`, `/metrics`
needs `metrics` (unless METRICS_PUBLIC); liveness, readiness and the API docs are open.
The key found is put in the request's state for the routes (event-type limits, rate limits).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.api.schemas import ErrorBody
from app.security.key_store import KeyRing
from app.security.keys import ANONYMOUS, ApiKey
from app.security.keys import Scope as KeyScope

logger = logging.getLogger(__name__)

WWW_AUTHENTICATE = 'Bearer realm="event-ingest"'
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorBody,
        "description": "No API key, or an unknown or revoked one; `WWW-Authenticate` says how to send one.",
    },
    403: {"model": ErrorBody, "description": "The API key lacks the scope this route needs."},
}
_PREFIX_SCOPES = (
    ("/v1/events", KeyScope.INGEST),
    ("/v1/event-types", KeyScope.INGEST),
    ("/admin", KeyScope.ADMIN),
    ("/metrics", KeyScope.METRICS),
)


def required_scope(path: str, metrics_public: bool) -> KeyScope | None:
    """The scope a path needs; None for open routes."""
    for prefix, scope in _PREFIX_SCOPES:
        if path == prefix or path.startswith(prefix + "/"):
            return None if scope is KeyScope.METRICS and metrics_public else scope
    return None


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`; None when neither is sent."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


def caller(request: Request) -> ApiKey:
    """The key the middleware found for this request (ANONYMOUS when auth is off)."""
    key: ApiKey = request.scope.get("state", {}).get("api_key", ANONYMOUS)
    return key


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        ring: KeyRing,
        registry: CollectorRegistry,
        *,
        enabled: bool,
        metrics_public: bool,
    ) -> None:
        self.app = app
        self.ring = ring
        self.enabled = enabled
        self.metrics_public = metrics_public
        self.refusals = Counter(
            "event_ingest_auth_refusals_total",
            "Requests refused for a missing, unknown or revoked key (401) or a missing scope (403).",
            ["reason"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        needed = required_scope(scope["path"], self.metrics_public)
        if needed is None:
            await self.app(scope, receive, send)
            return
        raw = presented_key(scope["headers"])
        key = self.ring.lookup(raw) if raw is not None else None
        if key is None or key.revoked:
            reason = "missing" if raw is None else ("revoked" if key is not None else "unknown")
            message = {
                "missing": "API key required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                "unknown": "API key not recognised",
                "revoked": "API key revoked",
            }[reason]
            self.refusals.labels(reason).inc()
            response = error_response(401, message, "unauthenticated")
            response.headers["WWW-Authenticate"] = WWW_AUTHENTICATE
            await response(scope, receive, send)
            return
        if needed not in key.scopes:
            self.refusals.labels("scope").inc()
            logger.info("request refused: scope", extra={"api_key": key.name, "scope": str(needed)})
            response = error_response(403, f"API key {key.name!r} lacks the {needed} scope", "forbidden")
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)
