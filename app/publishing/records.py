"""Kafka records as the publisher and the relay handle them, and their dead-letter form."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.publishing.errors import DeliveryError

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
