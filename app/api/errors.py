"""Error answers: 4xx bodies that name the field, and 429/503 with `Retry-After`, never a stack trace."""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from app.api.responses import JsonResponse
from app.events.validation import describe_errors
from app.observability.request_context import current_request_id

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499


def error_response(
    status: int,
    detail: Any,
    code: str,
    *,
    retriable: bool = False,
    retry_after: float | None = None,
    event_id: uuid.UUID | str | None = None,
    request_id: str | None = None,
    **extra: Any,
) -> JsonResponse:
    body: dict[str, Any] = {"detail": detail, "code": code, "retriable": retriable}
    if status >= 500:  # the id the logs carry too, so a client's report leads to the log lines
        body["request_id"] = request_id or current_request_id.get()
    if event_id is not None:
        body["event_id"] = str(event_id)
    body.update(extra)
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return JsonResponse(body, status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    401: "unauthenticated",
    403: "forbidden",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the same body shape."""

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError) -> JsonResponse:
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is not None and request.url.path.startswith("/v1/events"):
            runtime.metrics.record_rejected("validation")
        return error_response(422, describe_errors(exc.errors()), "validation_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JsonResponse:
        response = error_response(exc.status_code, exc.detail, _HTTP_CODES.get(exc.status_code, "http_error"))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, exc: ClientDisconnect) -> Response:
        # The client closed the connection before its whole body arrived (a client that gave up
        # waiting in the queue for a slot, say): nothing was taken and nobody hears an answer, so
        # not a server error. 499 is nginx's "client closed request", for the HTTP metrics.
        logger.info("client left before sending its whole request", extra={"path": request.url.path})
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JsonResponse:
        # Starlette calls this outside every middleware, so the id comes from the request's state.
        return internal_error(request.url.path, request.scope.get("state", {}).get("request_id"))


def internal_error(path: str, request_id: str | None) -> JsonResponse:
    """The 500 answer to an unexpected exception (being handled), logged with its traceback."""
    # Never the exception's text: it may name internals; the log line has it all.
    logger.exception("unhandled error", extra={"path": path, "request_id": request_id})
    response = error_response(
        500,
        "internal error; quote the request_id when reporting it",
        "internal_error",
        request_id=request_id,
    )
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response
