"""Request bodies with a size limit, and `Content-Encoding: gzip` undone before parsing.

A route class (FastAPI's documented way to customise body handling) so that both apply before
FastAPI parses JSON, and the OpenAPI schema still shows the typed models.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

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
            if media_type != "application/json" and not media_type.endswith("+json"):
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


def limited_body_route(max_bytes: int, *, drop_unknown_fields: bool = False) -> type[APIRoute]:
    """A route class whose requests read bodies through LimitedBodyRequest with this limit."""

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

            async def limited_handler(request: Request) -> Response:
                return await handler(request_class(request.scope, request.receive))

            return limited_handler

    return LimitedBodyRoute
