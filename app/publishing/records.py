"""Kafka records as the publisher and the relay handle them, and their dead-letter form."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.publishing.errors import DeliveryError
from event_models.models import BaseEvent

HeaderList = list[tuple[str, str]]


@dataclass(slots=True)
class OutRecord:
    """One record for one topic; `index` is the position of its event in the request."""

    index: int
    event_id: str
    topic: str
    key: bytes | None
    value: bytes
    headers: HeaderList
    attempts: int = 0
    error: DeliveryError | None = field(default=None)

    def size(self) -> int:
        """Bytes the broker counts against its record limit (key, value and headers)."""
        key = len(self.key) if self.key else 0
        return key + len(self.value) + sum(len(name) + len(value) for name, value in self.headers)


def event_headers(event: BaseEvent, traceparent: str | None, content_type: str) -> HeaderList:
    """The headers of an event's every record: its id, type and schema version, the value's content
    type and, when the event is traced, its `traceparent`."""
    headers = [
        ("event_id", event.event_id_text),
        *_type_headers(event.event_type, event.schema_version, content_type),
    ]
    if traceparent:
        headers.append(("traceparent", traceparent))
    return headers


@functools.lru_cache(maxsize=256)
def _type_headers(event_type: str, schema_version: int, content_type: str) -> tuple[tuple[str, str], ...]:
    """The headers every event of a type and schema version carries: built once, not per event."""
    return (
        ("event_type", event_type),
        ("schema_version", str(schema_version)),
        ("content_type", content_type),
    )


def dead_letter_headers(headers: HeaderList, original_topic: str, reason: str, attempts: int) -> HeaderList:
    """The original headers plus `dlq_reason`, `dlq_timestamp`, `original_topic` and `dlq_attempts`."""
    dlq = [
        ("dlq_reason", reason[:1000]),
        ("dlq_timestamp", datetime.now(UTC).isoformat().replace("+00:00", "Z")),
        ("original_topic", original_topic),
        ("dlq_attempts", str(attempts)),
    ]
    kept = [(name, value) for name, value in headers if name not in {name for name, _ in dlq}]
    return kept + dlq
