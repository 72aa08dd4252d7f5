"""Response and envelope models of the ingest API (what clients read)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ItemStatus = Literal["accepted", "spooled", "unrouted", "duplicate", "rejected"]


class EventAccepted(BaseModel):
    """The answer to one event the service took."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event_id": "7b78d6bb-5f24-47f7-a34a-45a222347f25",
                    "status": "accepted",
                    "topics": ["ml.training_events", "user.attempts"],
                }
            ]
        }
    )

    event_id: uuid.UUID
    status: Literal["accepted", "spooled", "unrouted", "duplicate"] = Field(
        description="`accepted`: Kafka acknowledged it in every topic listed; `spooled`: durable in the "
        "service's spool, the relay delivers it when Kafka can take it; `unrouted`: valid, but no routing "
        "rule matched, so it was not published; `duplicate`: seen before (same client_attempt_id or "
        "Idempotency-Key), not published again, `event_id` is the first one's."
    )
    topics: list[str]


class ItemError(BaseModel):
    """One reason a batch item was not accepted."""

    code: str = Field(
        description="validation_error, record_rejected, forbidden (not retriable); queue_full, spool_full, "
        "spool_unavailable (retriable)"
    )
    message: str
    retriable: bool = Field(description="True when sending the same item again later may succeed.")
    field: str | None = Field(None, description="Dotted path of the offending field, for validation errors.")


class BatchItemResult(BaseModel):
    """What happened to one item of a batch, by its position in the request."""

    index: int
    status: ItemStatus
    event_id: uuid.UUID | None = None
    topics: list[str] = Field(default_factory=list)
    errors: list[ItemError] | None = None
    status_code: int | None = Field(
        None, description="For a rejected item: the status a request with this item alone would get."
    )


class BatchResult(BaseModel):
    """Per-item results, in request order, with counts."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "accepted": 1,
                    "spooled": 0,
                    "unrouted": 0,
                    "duplicate": 0,
                    "rejected": 1,
                    "results": [
                        {
                            "index": 0,
                            "status": "accepted",
                            "event_id": "0b6f1c9e-3c55-4d0f-9a43-43f1c0f6a2aa",
                            "topics": ["user.activities"],
                        },
                        {
                            "index": 1,
                            "status": "rejected",
                            "topics": [],
                            "errors": [
                                {
                                    "code": "validation_error",
                                    "field": "quality",
                                    "message": "Input should be less than or equal to 5",
                                    "retriable": False,
                                }
                            ],
                        },
                    ],
                }
            ]
        }
    )

    accepted: int
    spooled: int
    unrouted: int
    duplicate: int
    rejected: int
    results: list[BatchItemResult]


class BatchRequest(BaseModel):
    """A batch: each item is one event object with its `event_type`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {
                            "event_type": "attempt",
                            "user_id": "user-42",
                            "occurred_at": "2026-11-24T10:15:00Z",
                            "client_attempt_id": "c0a8-0002",
                            "item_id": "item-18",
                            "correct": False,
                            "quality": 2,
                            "time_taken_ms": 8100,
                        },
                        {
                            "event_type": "activity",
                            "user_id": "user-42",
                            "occurred_at": "2026-11-24T10:16:00Z",
                            "activity_type": "hint_opened",
                        },
                    ]
                }
            ]
        },
    )

    events: list[Any] = Field(
        description="Event objects, each with `event_type` attempt, session, placement or activity. "
        "Items are validated one by one: a bad item does not stop the others."
    )


class ErrorBody(BaseModel):
    """An error answer: what went wrong, a machine-readable code, and whether to retry."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        {
                            "field": "quality",
                            "message": "Input should be less than or equal to 5",
                            "type": "less_than_equal",
                        }
                    ],
                    "code": "validation_error",
                    "retriable": False,
                }
            ]
        }
    )

    detail: Any
    code: str
    retriable: bool = False
    event_id: uuid.UUID | None = None
    dead_lettered: bool | None = Field(
        None, description="For record_rejected: kept in the dead-letter topic."
    )
    request_id: str | None = Field(
        None, description="On 5xx answers: the id the service's log lines for this request carry."
    )
