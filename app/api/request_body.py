"""Request bodies with a size limit, and `Content-Encoding: gzip` undone before parsing.

A route class (FastAPI's documented way to customise body handling) so that both apply before
FastAPI parses JSON, and the OpenAPI schema still shows the typed models.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeGuard

from fastapi import HTTPException, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from app.api.json_body import parse_json
from app.api.schemas import ErrorBody

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
ADMIN_MAX_BYTES = 1024 * 1024  # rules, replay filters, key requests: small documents

# What any route reading a body through LimitedBodyRequest may answer, for the OpenAPI schema.
BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Body not valid UTF-8, not valid gzip, or nested too deeply."},
    413: {"model": ErrorBody, "description": "Body larger than the limit."},
    415: {"model": ErrorBody, "description": "Not `application/json`, or an unsupported Content-Encoding."},
}


class LimitedBodyRequest(Request):
    """Reads at most `max_bytes` (compressed and decompressed), undoes gzip encoding, parses JSON
    strictly and, when `known_fields` is set (UNKNOWN_FIELDS=ignore), drops other top-level fields."""

    max_bytes = DEFAULT_MAX_BYTES
    known_fields: frozenset[str] | None = None

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            media_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
            if not is_json_media_type(media_type):
                raise HTTPException(415, "Content-Type must be application/json")
            declared = self.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise _too_large(self.max_bytes)
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > self.max_bytes:
                    raise _too_large(self.max_bytes)
                chunks.append(chunk)
            body = b"".join(chunks)
            encoding = self.headers.get("content-encoding", "identity").strip().lower()
            if encoding == "gzip":
                body = _gunzip(body, self.max_bytes)
            elif encoding not in {"", "identity"}:
                raise HTTPException(415, f"Content-Encoding {encoding!r} is not supported: use gzip or none")
            self._body = body
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # Where validation starts: the handler records the "validate" span up to its own start.
            self.scope.setdefault("state", {})["validation_started_ns"] = time.time_ns()
            data = parse_json(await self.body())
            if self.known_fields is not None and isinstance(data, dict):
                data = {key: value for key, value in data.items() if key in self.known_fields}
            self._json = data
        return self._json


def is_json_media_type(media_type: str) -> bool:
    """`application/json` or a `+json` type (lower case, without parameters)."""
    return media_type == "application/json" or media_type.endswith("+json")


def _gunzip(data: bytes, limit: int) -> bytes:
    # Decompress in bounded steps so that a small "gzip bomb" cannot expand beyond the limit.
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as exc:
        raise HTTPException(400, f"request body is not valid gzip: {exc}") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise _too_large(limit)
    return out


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"request body exceeds {limit} bytes")


def limited_body_route(
    max_bytes: int, *, drop_unknown_fields: bool = False, direct: bool = False
) -> type[APIRoute]:
    """A route class whose requests read bodies through LimitedBodyRequest with this limit.

    `direct`: endpoints that take only a Request and at most one body model, and return a
    Response, are called without FastAPI's per-request machinery when the body is valid (see
    `_direct_handler`); anything else still goes through FastAPI.
    """

    class LimitedBodyRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            model = self.body_field.field_info.annotation if self.body_field is not None else None
            known = (
                frozenset(model.model_fields)
                if drop_unknown_fields and isinstance(model, type) and issubclass(model, BaseModel)
                else None
            )
            request_class = type(
                "LimitedBodyRequestN", (LimitedBodyRequest,), {"max_bytes": max_bytes, "known_fields": known}
            )
            body_model = model if _is_model(model) else None
            if direct and _plain(self.dependant) and (model is None or body_model is not None):
                return _direct_handler(self.dependant, body_model, handler, request_class)

            async def limited_handler(request: Request) -> Response:
                return await handler(request_class(request.scope, request.receive))

            return limited_handler

    return LimitedBodyRoute


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _plain(dependant: Dependant) -> bool:
    """Only a Request parameter and at most one body parameter: nothing for FastAPI to resolve."""
    return (
        dependant.request_param_name is not None
        and len(dependant.body_params) <= 1
        and not (
            dependant.dependencies
            or dependant.path_params
            or dependant.query_params
            or dependant.header_params
            or dependant.cookie_params
            or dependant.background_tasks_param_name
            or dependant.response_param_name
        )
    )


def _direct_handler(
    dependant: Dependant,
    model: type[BaseModel] | None,
    fastapi_handler: Callable[[Request], Coroutine[Any, Any, Response]],
    request_class: type[LimitedBodyRequest],
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    """Reads and validates the body itself and calls the endpoint: FastAPI's dependency solving
    and response handling cost about a quarter of a single event's CPU, for nothing here.

    A body that does not parse or validate goes to FastAPI's own handler (the body is kept in the
    request), so every error answer is exactly FastAPI's.
    """
    endpoint = dependant.call
    assert endpoint is not None
    request_name = dependant.request_param_name
    body_name = dependant.body_params[0].name if model is not None else None

    async def direct_handler(request: Request) -> Response:
        limited = request_class(request.scope, request.receive)
        arguments: dict[str, Any] = {request_name: limited}  # type: ignore[dict-item]
        if model is not None:
            try:
                data = await limited.json() if await limited.body() else None
                arguments[body_name] = model.model_validate(data)  # type: ignore[index]
            except (ValueError, ValidationError):  # JSONDecodeError and friends, or an invalid event
                return await fastapi_handler(limited)
        response = await endpoint(**arguments)
        if not isinstance(response, Response):
            raise TypeError(f"{dependant.name}: a direct route must return a Response")
        return response

    return direct_handler
