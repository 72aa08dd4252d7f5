"""The ingest service: validation of batch items, idempotency, publishing, and per-item outcomes.

Routes call it and only shape the HTTP answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.event_types.events import CustomEvent, validate_custom
from app.event_types.registry import RegisteredType
from app.events.time_window import EventTimeWindow
from app.events.validation import describe_errors
from app.idempotency.store import IdempotencyStore, StoredResult
from app.ingest.single_events import AckLevel, EventKeys, SingleEventGroups, WaitingEvent
from app.observability.publisher_metrics import PublisherMetrics
from app.publishing.publisher import EventPublisher, PublishFailure
from event_models.models import AnyEvent, AttemptEvent, BaseEvent, EventType
from event_models.outcomes import EventStatus, FailureCode

EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

BUILTIN_TYPES = frozenset(kind.value for kind in EventType)


@dataclass(slots=True)
class ItemOutcome:
    """What happened to one event of a request."""

    status: EventStatus | str  # a str when read back from an idempotency store
    event_id: str | None = None
    topics: Sequence[str] = ()
    failure: PublishFailure | None = None
    validation_errors: list[dict[str, Any]] | None = None

    def stored(self) -> StoredResult:
        return {"event_id": self.event_id, "status": self.status, "topics": self.topics}


def _from_stored(stored: StoredResult, status: EventStatus | None = None) -> ItemOutcome:
    return ItemOutcome(
        status=status or stored.get("status", EventStatus.DUPLICATE),
        event_id=stored["event_id"],
        topics=tuple(stored.get("topics", ())),
    )


class IngestService:
    """Turns validated (or raw batch) events into outcomes, publishing each at most once per key."""

    def __init__(
        self,
        publisher: EventPublisher,
        idempotency: IdempotencyStore,
        metrics: PublisherMetrics,
        time_window: EventTimeWindow,
        event_types: Callable[[str], RegisteredType | None] = lambda name: None,
    ) -> None:
        self.publisher = publisher
        self.idempotency = idempotency
        self.metrics = metrics
        self.time_window = time_window
        self.event_types = event_types  # the registered (custom) types by name
        self.single_events: SingleEventGroups[ItemOutcome] = SingleEventGroups(self._ingest_group)

    async def ingest_one(
        self, event: BaseEvent, idempotency_key: str | None, traceparent: str | None, ack: AckLevel
    ) -> ItemOutcome:
        """One event. A known key answers `duplicate` with the first event id.

        Published together with the single events of other requests in the same loop turn (see
        `SingleEventGroups`); with tracing on, alone, so that its spans belong to its request.
        """
        problems = self.time_window.problems(event)
        if problems is not None:
            self.metrics.record_rejected("validation")
            return ItemOutcome(EventStatus.REJECTED, event.event_id_text, validation_errors=problems)
        keys = _keys(event, idempotency_key)
        if not self.publisher.tracing.enabled:
            return await self.single_events.submit(WaitingEvent(event, keys, traceparent), ack)
        (outcome,) = await self._ingest([event], [keys], [traceparent], ack, batch=False)
        return outcome

    async def _ingest_group(self, waiting: list[WaitingEvent], ack: AckLevel) -> list[ItemOutcome]:
        """The single events of several requests, each with its own keys and trace context."""
        return await self._ingest(
            [item.event for item in waiting],
            [item.keys for item in waiting],
            [item.traceparent for item in waiting],
            ack,
            batch=False,
        )

    async def ingest_batch(
        self,
        items: Sequence[Any],
        idempotency_key: str | None,
        traceparent: str | None,
        ack: AckLevel,
        may_post: Callable[[str], bool] | None = None,
    ) -> list[ItemOutcome]:
        """Validate items one by one; publish the valid ones in order; one outcome per item.

        Items whose event type `may_post` refuses (the caller's key is limited) are rejected 403.
        """
        outcomes: list[ItemOutcome | None] = [None] * len(items)
        valid: list[tuple[int, BaseEvent]] = []
        forbidden = 0
        now = datetime.now(UTC)
        earliest, latest = self.time_window.bounds(now)  # checked per event without a call
        for index, item in enumerate(items):
            if isinstance(item, BaseEvent):
                event = item
            elif isinstance(item, dict) and _registered_type_name(item.get("event_type")):
                custom, errors = self._custom(item)
                if custom is None:
                    raw_id = item.get("event_id")
                    outcomes[index] = ItemOutcome(
                        EventStatus.REJECTED, uuid_or_none(raw_id), validation_errors=errors
                    )
                    continue
                event = custom
            else:
                try:
                    event = EVENT_ADAPTER.validate_python(item)
                except ValidationError as exc:
                    raw_id = item.get("event_id") if isinstance(item, dict) else None
                    outcomes[index] = ItemOutcome(
                        EventStatus.REJECTED,
                        uuid_or_none(raw_id),
                        validation_errors=describe_errors(exc.errors(), strip_tag=True),
                    )
                    continue
            if may_post is not None and not may_post(event.event_type):
                forbidden += 1
                outcomes[index] = ItemOutcome(
                    EventStatus.REJECTED, event.event_id_text, failure=_forbidden(event.event_type)
                )
                continue
            if not earliest <= event.occurred_at <= latest:
                problems = self.time_window.problems(event, now)
                outcomes[index] = ItemOutcome(
                    EventStatus.REJECTED, event.event_id_text, validation_errors=problems
                )
                continue
            valid.append((index, event))
        if forbidden:
            self.metrics.record_rejected("forbidden", forbidden)
        if len(valid) + forbidden < len(items):
            self.metrics.record_rejected("validation", len(items) - len(valid) - forbidden)
        keys = [
            _keys(event, f"{idempotency_key}:{index}" if idempotency_key else None) for index, event in valid
        ]
        published = await self._ingest(
            [event for _, event in valid], keys, [traceparent] * len(valid), ack, batch=True
        )
        if len(published) == len(items):  # every item valid: the outcomes are in item order already
            return published
        for (index, _), outcome in zip(valid, published, strict=True):
            outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def _custom(self, item: dict[str, Any]) -> tuple[CustomEvent | None, list[dict[str, Any]] | None]:
        """A batch item of a registered type, or its errors (an unknown or disabled type is one)."""
        name = item.get("event_type")
        registered = self.event_types(name) if isinstance(name, str) else None
        if registered is None:
            message = f"event_type must be one of {', '.join(sorted(BUILTIN_TYPES))} or a registered type"
            return None, [{"field": "event_type", "message": message, "type": "unknown_event_type"}]
        if not registered.record.enabled:
            message = f"event type {registered.name} is disabled"
            return None, [{"field": "event_type", "message": message, "type": "disabled_event_type"}]
        return validate_custom(registered, item)

    async def _ingest(
        self,
        events: list[BaseEvent],
        keys: list[EventKeys],
        traceparents: Sequence[str | None],
        ack: AckLevel,
        *,
        batch: bool,
    ) -> list[ItemOutcome]:
        outcomes: list[ItemOutcome | None] = [None] * len(events)
        # Routed first, so that a key's first answer already names its topics: only a batch's own
        # keys (from its Idempotency-Key), whose retry is answered with each item's status, need
        # the final answer stored after publishing; any other key answers `duplicate` with the
        # event id and topics, which the reservation holds.
        routes = [self.publisher.router.route(event) for event in events]
        # Every key of the request is reserved in one call, in event order.
        keyed = [position for position, event_keys in enumerate(keys) if event_keys]
        if keyed:
            groups = []
            for position in keyed:
                provisional = {
                    "event_id": events[position].event_id_text,
                    "status": "in_progress",
                    "topics": list(routes[position].topics),
                }
                groups.append([(key, provisional) for _, key in keys[position]])
            for position, known in zip(keyed, await self.idempotency.reserve(groups), strict=True):
                if known is None:
                    continue
                key_position, stored = known
                kind = keys[position][key_position][0]
                # A retried batch gets the first answer for its items; anything else is a duplicate.
                replay = batch and kind == "request" and stored.get("status") != "in_progress"
                outcomes[position] = _from_stored(stored, None if replay else EventStatus.DUPLICATE)
                self.metrics.record_duplicate()
        fresh = [position for position, outcome in enumerate(outcomes) if outcome is None]
        to_publish = events
        if len(fresh) < len(events):  # duplicates are not published (the common case copies nothing)
            to_publish = [events[p] for p in fresh]
            traceparents = [traceparents[p] for p in fresh]
            routes = [routes[p] for p in fresh]
        results = await self.publisher.publish_many(
            to_publish, traceparents=traceparents, spool_only=ack == "spool", routes=routes
        )
        completed: dict[str, StoredResult] = {}
        released: list[str] = []
        for position, result in zip(fresh, results, strict=True):
            outcome = ItemOutcome(result.outcome, result.event_id, result.topics, result.failure)
            outcomes[position] = outcome
            event_keys = keys[position]
            if not event_keys:
                continue
            if outcome.status == EventStatus.REJECTED:  # not accepted: a retry must be processed
                released += [key for _, key in event_keys]
            elif batch:  # only a batch's request keys take the final answer (see above)
                for kind, key in event_keys:
                    if kind == "request":
                        completed[key] = outcome.stored()
        if completed or released:
            await self.idempotency.settle(completed, released)
        done = [outcome for outcome in outcomes if outcome is not None]
        by_type: dict[tuple[str, str], int] = {}
        for event, outcome in zip(events, done, strict=True):
            pair = (event.event_type, str(outcome.status))
            by_type[pair] = by_type.get(pair, 0) + 1
        self.metrics.record_events(by_type)
        return done


def _keys(event: BaseEvent, request_key: str | None) -> EventKeys:
    """The idempotency keys of one event, as (kind, key): the request's and, for attempts, the attempt's."""
    keys: EventKeys = []
    if request_key:
        keys.append(("request", f"key:{request_key}"))
    if isinstance(event, AttemptEvent) and event.client_attempt_id:
        keys.append(("attempt", f"attempt:{event.user_id}:{event.client_attempt_id}"))
    elif isinstance(event, CustomEvent):
        identity = event.identity()
        if identity is not None:
            keys.append(("identity", f"identity:{identity}"))
    return keys


def _registered_type_name(kind: object) -> bool:
    """A batch item's `event_type` that names no built-in type (a missing or non-text one is left
    to the built-in models, which say what is wrong)."""
    return isinstance(kind, str) and kind not in BUILTIN_TYPES


def _forbidden(event_type: str) -> PublishFailure:
    return PublishFailure(
        FailureCode.FORBIDDEN, f"this API key may not post {event_type} events", retriable=False
    )


def uuid_or_none(value: object) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value is not None else None
    except ValueError:
        return None
