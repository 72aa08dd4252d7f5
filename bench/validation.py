"""Per-event validation cost: a built-in type (pydantic model) next to a registered type with the
same fields (its JSON Schema generated from that model, checked by a compiled jsonschema-rs
validator, the envelope by the service's model). In-process, one core, no HTTP or Kafka: the part of
an event's CPU that differs between the two. `make bench` prints it; `python -m bench.validation`
alone too."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from typing import Any

from app.event_types.compatibility import Compatibility
from app.event_types.events import validate_custom
from app.event_types.registry import RegisteredType, builtin_views
from app.event_types.store import EventTypeRecord
from app.ingest.service import EVENT_ADAPTER

ROUNDS = 5
EVENTS_PER_ROUND = 20_000


def _attempt(n: int) -> dict[str, Any]:
    return {
        "user_id": f"u{n % 1000}",
        "occurred_at": datetime.now(UTC).isoformat(),
        "client_attempt_id": f"c-{n}",
        "item_id": f"i{n % 50}",
        "correct": True,
        "quality": n % 6,
        "time_taken_ms": 1200,
    }


def _registered() -> RegisteredType:
    schema = builtin_views()["attempt"].schema_
    record = EventTypeRecord(
        name="bench.attempt",
        description="",
        owner="bench",
        partition_key="user_id",
        idempotency_fields=["user_id", "client_attempt_id"],
        compatibility=Compatibility.NONE,
        enabled=True,
        version=1,
        schemas={1: schema},
    )
    return RegisteredType(record)


def _microseconds_per_event(check: Any, events: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for event in events:
        check(event)
    return (time.perf_counter() - started) / len(events) * 1e6


def measure() -> dict[str, float]:
    """Median µs per event over rounds, for the built-in and the registered form."""
    registered = _registered()
    builtin_events = [{"event_type": "attempt", **_attempt(n)} for n in range(EVENTS_PER_ROUND)]
    custom_events = [_attempt(n) for n in range(EVENTS_PER_ROUND)]
    event, errors = validate_custom(registered, custom_events[0])
    assert event is not None, errors  # the same event is valid both ways
    builtin, custom = [], []
    for _ in range(ROUNDS):
        builtin.append(_microseconds_per_event(EVENT_ADAPTER.validate_python, builtin_events))
        custom.append(_microseconds_per_event(lambda item: validate_custom(registered, item), custom_events))
    return {"builtin_us": statistics.median(builtin), "registered_us": statistics.median(custom)}


if __name__ == "__main__":
    figures = measure()
    print(
        f"validation per event: built-in attempt {figures['builtin_us']:.1f} µs, the same fields as a "
        f"registered type {figures['registered_us']:.1f} µs ({figures['registered_us'] / figures['builtin_us']:.1f} times)"
    )
