"""Parsing a batch body: one pass in pydantic-core for the common all-valid batch, item by item otherwise."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from app.api.json_body import parse_json
from app.api.schemas import BatchRequest
from event_models.models import MODEL_BY_TYPE, AnyEvent, BaseEvent


class _ValidBatch(BaseModel):
    """A batch whose every item is valid: validated in one pydantic-core call."""

    model_config = ConfigDict(extra="forbid")
    events: list[AnyEvent]


_VALID_BATCH: TypeAdapter[_ValidBatch] = TypeAdapter(_ValidBatch)


def parse_batch(
    body: bytes, max_events: int, *, drop_unknown_fields: bool = False
) -> list[BaseEvent] | list[Any]:
    """Validated events when every item is valid; else the raw items, for per-item validation.

    Raises 422 (RequestValidationError) for a body that is not a batch envelope and 413 for
    more than `max_events` items; 400/422 from parse_json for bad encoding or duplicate keys.
    """
    try:
        data = parse_json(body)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"loc": ("body",), "msg": f"JSON decode error: {exc}", "type": "json_invalid"}]
        ) from None
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        _check_length(len(data["events"]), max_events)  # before spending time on the items
    if drop_unknown_fields:
        data = _without_unknown_fields(data)
    try:
        events: list[BaseEvent] = list(_VALID_BATCH.validate_python(data).events)
    except ValidationError:
        pass
    else:
        return events
    try:
        items = BatchRequest.model_validate(data).events
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None
    _check_length(len(items), max_events)
    return items


def _without_unknown_fields(data: Any) -> Any:
    """Each item without the top-level fields its event type's model does not know."""
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        return data
    items = []
    for item in data["events"]:
        kind = item.get("event_type") if isinstance(item, dict) else None
        model = MODEL_BY_TYPE.get(kind) if isinstance(kind, str) else None  # type: ignore[call-overload]
        if model is not None:
            known = model.__pydantic_fields__  # (`model_fields` is a property: ~2 µs a call)
            item = {key: value for key, value in item.items() if key in known}
        items.append(item)
    return {**data, "events": items}


def _check_length(count: int, max_events: int) -> None:
    if count > max_events:
        raise HTTPException(413, f"batch has {count} events; the limit is {max_events}")
