"""What both clients share: building requests from events and reading the service's answers.

Kept free of I/O so the sync and async clients differ only in how they wait.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from pydantic import TypeAdapter

from event_models.models import AnyEvent, BaseEvent, RegisteredTypeEvent
from event_models.outcomes import EventStatus

EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
PATHS = {
    "attempt": "/v1/events/attempts",
    "session": "/v1/events/sessions",
    "placement": "/v1/events/placements",
    "activity": "/v1/events/activities",
}
RETRIABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

EventLike = BaseEvent | Mapping[str, Any]


# What happened to one event: the service's own words (event_models.outcomes), under the client's name.
PublishStatus = EventStatus


@dataclass(frozen=True)
class PublishResult:
    """The service's answer for one event. `ok` is true for everything but `rejected`."""

    status: PublishStatus
    event_id: str | None
    topics: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    http_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.status is not PublishStatus.REJECTED

    @property
    def retriable(self) -> bool:
        return not self.ok and any(error.get("retriable") for error in self.errors)


class IngestError(Exception):
    """The service could not be reached or answered in a way the client cannot use."""


def as_event(event: EventLike | str, fields: Mapping[str, Any] | None = None) -> BaseEvent:
    """A validated event model with an event_id fixed on the client, so retries carry the same id.

    `event` is a model, a mapping with its `event_type`, or a registered type's name with the
    event's `fields` (envelope and own fields): the client checks the envelope, the service the rest.
    """
    if isinstance(event, str):
        if not isinstance(fields, Mapping):
            raise TypeError("publishing by type name takes the event's fields as a mapping")
        event = {**fields, "event_type": event}
    if isinstance(event, BaseEvent):
        return event
    if not isinstance(event, Mapping):
        raise TypeError(f"an event is a model or a mapping, not {type(event).__name__}")
    data = dict(event)
    if isinstance(data.get("event_type"), str) and data["event_type"] not in PATHS:
        return RegisteredTypeEvent.model_validate(data)
    return EVENT_ADAPTER.validate_python(data)


def path_for(event: BaseEvent) -> str:
    return PATHS.get(event.event_type) or f"/v1/events/{event.event_type}"


def event_body(event: BaseEvent) -> bytes:
    return orjson.dumps(event.model_dump(mode="json", exclude={"received_at"}))


def batch_body(events: Sequence[BaseEvent]) -> bytes:
    items = [event.model_dump(mode="json", exclude={"received_at"}) for event in events]
    return orjson.dumps({"events": items})


def headers(api_key: str | None, idempotency_key: str) -> dict[str, str]:
    out = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    return out


def key_for(events: Sequence[BaseEvent]) -> str:
    """The Idempotency-Key of a request: derived from its events' ids, so a retry, or sending the
    same events again, is answered with the first results instead of being published twice."""
    if len(events) == 1:
        return f"event-{events[0].event_id}"
    digest = hashlib.sha256("".join(str(event.event_id) for event in events).encode()).hexdigest()
    return f"batch-{digest[:40]}"


def should_retry(response: httpx.Response) -> bool:
    return response.status_code in RETRIABLE_STATUSES


def backoff(attempt: int, response: httpx.Response | None, base: float, cap: float) -> float:
    """Seconds before retry `attempt` (1 = first): Retry-After when the service sent one, else
    exponential with full jitter."""
    if response is not None:
        retry_after = response.headers.get("Retry-After", "")
        if retry_after.isdigit():
            return min(cap, float(retry_after))
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def single_result(response: httpx.Response, event: BaseEvent) -> PublishResult:
    body = _json(response)
    if response.status_code in (200, 202):
        return PublishResult(
            PublishStatus(body.get("status", "accepted")),
            body.get("event_id") or str(event.event_id),
            list(body.get("topics", [])),
            http_status=response.status_code,
        )
    detail = body.get("detail", response.text)
    errors = (
        [{"code": body.get("code", "error"), "message": item.get("message"), "field": item.get("field"),
          "retriable": bool(body.get("retriable"))} for item in detail]
        if isinstance(detail, list)
        else [{"code": body.get("code", "error"), "message": str(detail), "retriable": bool(body.get("retriable"))}]
    )  # fmt: skip
    return PublishResult(PublishStatus.REJECTED, body.get("event_id") or str(event.event_id), [], errors,
                         response.status_code)  # fmt: skip


def batch_results(response: httpx.Response, events: Sequence[BaseEvent]) -> list[PublishResult]:
    body = _json(response)
    if response.status_code not in (202, 207) or "results" not in body:
        failed = single_result(response, events[0]) if events else None
        errors = failed.errors if failed else []
        return [
            PublishResult(PublishStatus.REJECTED, str(event.event_id), [], errors, response.status_code)
            for event in events
        ]
    return [
        PublishResult(
            PublishStatus(item["status"]),
            item.get("event_id"),
            list(item.get("topics", [])),
            list(item.get("errors", [])),
            response.status_code,
        )
        for item in body["results"]
    ]


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
