"""Parsing a batch body: one pass in pydantic-core for the common all-valid batch, item by item otherwise."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from app.api.schemas import BatchRequest
from app.events.models import AnyEvent, BaseEvent


class _ValidBatch(BaseModel):
    """A batch whose every item is valid: parsed and validated from bytes in one call."""

    model_config = ConfigDict(extra="forbid")
    events: list[AnyEvent]


_VALID_BATCH: TypeAdapter[_ValidBatch] = TypeAdapter(_ValidBatch)


def parse_batch(body: bytes, max_events: int) -> list[BaseEvent] | list[Any]:
    """Validated events when every item is valid; else the raw items, for per-item validation.

    Raises 422 (RequestValidationError) for a body that is not a batch envelope and 413 for
    more than `max_events` items.
    """
    try:
        events: list[BaseEvent] = list(_VALID_BATCH.validate_json(body).events)
    except ValidationError:
        pass
    else:
        _check_length(len(events), max_events)
        return events
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"loc": ("body",), "msg": f"JSON decode error: {exc}", "type": "json_invalid"}]
        ) from None
    try:
        items = BatchRequest.model_validate(data).events
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None
    _check_length(len(items), max_events)
    return items


def _check_length(count: int, max_events: int) -> None:
    if count > max_events:
        raise HTTPException(413, f"batch has {count} events; the limit is {max_events}")
