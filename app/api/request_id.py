"""Every request gets an id: the client's `X-Request-ID` when sane, else a new one.

It is echoed in the `X-Request-ID` response header, added to every log line made while serving
the request, and put in 5xx bodies, so an on-call engineer can go from a client's error to the logs.
The caller's `traceparent` is kept too, so log lines carry its trace id even with tracing off.
A plain ASGI middleware: Starlette's BaseHTTPMiddleware costs a task per request.
"""

from __future__ import annotations

import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.request_context import current_request_id, current_traceparent

HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_TRACEPARENT = re.compile(rb"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, traceparent = client_ids(scope["headers"])
        request_id = request_id or os.urandom(8).hex()
        scope.setdefault("state", {})["request_id"] = request_id  # for the 500 handler, outside us
        token = current_request_id.set(request_id)
        trace_token = current_traceparent.set(traceparent)
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER, encoded)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)
            current_traceparent.reset(trace_token)


def client_ids(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The client's request id and traceparent, each only when well formed."""
    request_id = traceparent = None
    for name, value in headers:
        if name == HEADER and _SANE.fullmatch(value):
            request_id = value.decode()
        elif name == b"traceparent" and _TRACEPARENT.fullmatch(value.strip()):
            traceparent = value.strip().decode()
    return request_id, traceparent
