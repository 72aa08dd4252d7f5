"""The learning events as the service and its clients both see them: pydantic models, validated and
normalized (UTC times, an event id), with no dependency on either side."""

from event_models.models import (
    ActivityEvent,
    AnyEvent,
    AttemptEvent,
    BaseEvent,
    EventType,
    PlacementEvent,
    RegisteredTypeEvent,
    SessionEvent,
)

__all__ = [
    "ActivityEvent",
    "AnyEvent",
    "AttemptEvent",
    "BaseEvent",
    "EventType",
    "PlacementEvent",
    "RegisteredTypeEvent",
    "SessionEvent",
]
