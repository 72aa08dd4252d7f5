"""Event models: what a client may send, validated and normalized (UTC, event id)."""

from app.events.models import (
    ActivityEvent,
    AnyEvent,
    AttemptEvent,
    BaseEvent,
    EventType,
    PlacementEvent,
    SessionEvent,
)

__all__ = [
    "ActivityEvent",
    "AnyEvent",
    "AttemptEvent",
    "BaseEvent",
    "EventType",
    "PlacementEvent",
    "SessionEvent",
]
