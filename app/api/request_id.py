"""Every request gets an id: the client's `X-Request-ID` when sane, else a new one.

It is echoed in the `X-Request-ID` response header, added to every log line made while serving
the request, and put in 5xx bodies, so an on-call engineer can go from a client's error to the logs.
A plain ASGI middleware: Starlette's BaseHTTPMiddleware costs a task per request.
"""

from __future__ import annotations

import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.request_context import current_request_id

HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _from_client(scope["headers"]) or os.urandom(8).hex()
        scope.setdefault("state", {})["request_id"] = request_id  # for the 500 handler, outside us
        token = current_request_id.set(request_id)
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER, encoded)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)


def _from_client(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == HEADER:
            return value.decode() if _SANE.fullmatch(value) else None
    return None
