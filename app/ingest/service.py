"""The ingest service: validation of batch items, idempotency, publishing, and per-item outcomes.

Routes call it and only shape the HTTP answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from app.events.models import AnyEvent, AttemptEvent, BaseEvent
from app.events.time_window import EventTimeWindow
from app.events.validation import describe_errors
from app.idempotency.store import IdempotencyStore, StoredResult
from app.observability.publisher_metrics import PublisherMetrics
from app.publishing.publisher import (
    EventPublisher,
    FailureCode,
    Outcome,
    PublishFailure,
    PublishResult,
)

EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

ItemStatus = Literal["accepted", "spooled", "unrouted", "duplicate", "rejected"]
AckLevel = Literal["kafka", "spool"]


@dataclass(slots=True)
class ItemOutcome:
    """What happened to one event of a request."""

    status: ItemStatus
    event_id: uuid.UUID | None = None
    topics: list[str] = field(default_factory=list)
    failure: PublishFailure | None = None
    validation_errors: list[dict[str, Any]] | None = None

    def stored(self) -> StoredResult:
        return {"event_id": str(self.event_id), "status": self.status, "topics": self.topics}


def _from_stored(stored: StoredResult, status: ItemStatus | None = None) -> ItemOutcome:
    return ItemOutcome(
        status=status or stored.get("status", "duplicate"),
        event_id=uuid.UUID(stored["event_id"]),
        topics=list(stored.get("topics", [])),
    )


def _from_publish(result: PublishResult) -> ItemOutcome:
    if result.failure is not None:
        return ItemOutcome("rejected", result.event_id, list(result.topics), failure=result.failure)
    status: ItemStatus = {
        Outcome.ACCEPTED: "accepted",
        Outcome.SPOOLED: "spooled",
        Outcome.UNROUTED: "unrouted",
    }[result.outcome]  # type: ignore[assignment]
    return ItemOutcome(status, result.event_id, list(result.topics))


class IngestService:
    """Turns validated (or raw batch) events into outcomes, publishing each at most once per key."""

    def __init__(
        self,
        publisher: EventPublisher,
        idempotency: IdempotencyStore,
        metrics: PublisherMetrics,
        time_window: EventTimeWindow,
    ) -> None:
        self.publisher = publisher
        self.idempotency = idempotency
        self.metrics = metrics
        self.time_window = time_window

    async def ingest_one(
        self, event: BaseEvent, idempotency_key: str | None, traceparent: str | None, ack: AckLevel
    ) -> ItemOutcome:
        """One event. A known key answers `duplicate` with the first event id."""
        problems = self.time_window.problems(event)
        if problems is not None:
            self.metrics.record_rejected("validation")
            return ItemOutcome("rejected", event.event_id, validation_errors=problems)
        (outcome,) = await self._ingest(
            [event], [_keys(event, idempotency_key)], traceparent, ack, batch=False
        )
        return outcome

    async def ingest_batch(
        self,
        items: Sequence[Any],
        idempotency_key: str | None,
        traceparent: str | None,
        ack: AckLevel,
        may_post: Callable[[str], bool] = lambda event_type: True,
    ) -> list[ItemOutcome]:
        """Validate items one by one; publish the valid ones in order; one outcome per item.

        Items whose event type `may_post` refuses (the caller's key is limited) are rejected 403.
        """
        outcomes: list[ItemOutcome | None] = [None] * len(items)
        valid: list[tuple[int, BaseEvent]] = []
        forbidden = 0
        now = datetime.now(UTC)
        for index, item in enumerate(items):
            try:
                event = item if isinstance(item, BaseEvent) else EVENT_ADAPTER.validate_python(item)
            except ValidationError as exc:
                raw_id = item.get("event_id") if isinstance(item, dict) else None
                outcomes[index] = ItemOutcome(
                    "rejected",
                    _uuid_or_none(raw_id),
                    validation_errors=describe_errors(exc.errors(), strip_tag=True),
                )
                continue
            if not may_post(event.event_type):
                forbidden += 1
                outcomes[index] = ItemOutcome(
                    "rejected", event.event_id, failure=_forbidden(event.event_type)
                )
                continue
            problems = self.time_window.problems(event, now)
            if problems is not None:
                outcomes[index] = ItemOutcome("rejected", event.event_id, validation_errors=problems)
                continue
            valid.append((index, event))
        if forbidden:
            self.metrics.record_rejected("forbidden", forbidden)
        if len(valid) + forbidden < len(items):
            self.metrics.record_rejected("validation", len(items) - len(valid) - forbidden)
        keys = [
            _keys(event, f"{idempotency_key}:{index}" if idempotency_key else None) for index, event in valid
        ]
        published = await self._ingest([event for _, event in valid], keys, traceparent, ack, batch=True)
        for (index, _), outcome in zip(valid, published, strict=True):
            outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    async def _ingest(
        self,
        events: list[BaseEvent],
        keys: list[_Keys],
        traceparent: str | None,
        ack: AckLevel,
        *,
        batch: bool,
    ) -> list[ItemOutcome]:
        outcomes: list[ItemOutcome | None] = [None] * len(events)
        fresh: list[int] = []
        for position, (event, event_keys) in enumerate(zip(events, keys, strict=True)):
            provisional = {"event_id": str(event.event_id), "status": "in_progress", "topics": []}
            known = await self._reserve(event_keys, provisional)
            if known is None:
                fresh.append(position)
                continue
            key_kind, stored = known
            # A retried batch gets the first answer for its items; anything else is a duplicate.
            replay = batch and key_kind == "request" and stored.get("status") != "in_progress"
            outcomes[position] = _from_stored(stored, None if replay else "duplicate")
            self.metrics.record_duplicate()
        results = await self.publisher.publish_many(
            [events[p] for p in fresh], traceparent, spool_only=ack == "spool"
        )
        for position, result in zip(fresh, results, strict=True):
            outcome = _from_publish(result)
            outcomes[position] = outcome
            for key in keys[position].all():
                if outcome.status == "rejected":
                    await self.idempotency.release(key)
                else:
                    await self.idempotency.complete(key, outcome.stored())
        return [outcome for outcome in outcomes if outcome is not None]

    async def _reserve(self, keys: _Keys, provisional: StoredResult) -> tuple[str, StoredResult] | None:
        reserved: list[str] = []
        for kind, key in keys.named():
            known = await self.idempotency.reserve(key, provisional)
            if known is not None:
                for taken in reserved:  # undo the reservations of this event: it is not published
                    await self.idempotency.release(taken)
                return kind, known
            reserved.append(key)
        return None


@dataclass(frozen=True, slots=True)
class _Keys:
    """The idempotency keys of one event: the request's key and, for attempts, the attempt's own."""

    request: str | None
    attempt: str | None

    def named(self) -> list[tuple[str, str]]:
        return [(kind, key) for kind, key in (("request", self.request), ("attempt", self.attempt)) if key]

    def all(self) -> list[str]:
        return [key for _, key in self.named()]


def _keys(event: BaseEvent, request_key: str | None) -> _Keys:
    attempt = (
        f"attempt:{event.user_id}:{event.client_attempt_id}" if isinstance(event, AttemptEvent) else None
    )
    return _Keys(request=f"key:{request_key}" if request_key else None, attempt=attempt)


def _forbidden(event_type: str) -> PublishFailure:
    return PublishFailure(
        FailureCode.FORBIDDEN, f"this API key may not post {event_type} events", retriable=False
    )


def _uuid_or_none(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None
