"""The two wire formats. Both carry the same normalized event: UTC timestamps, server event id."""

from __future__ import annotations

from typing import Protocol

from event_models.models import BaseEvent


class EventSerializer(Protocol):
    """Turns a validated event into a Kafka record value."""

    content_type: str

    def serialize(self, event: BaseEvent) -> bytes: ...


class JsonSerializer:
    """UTF-8 JSON, timestamps in RFC 3339 UTC with a `Z`."""

    content_type = "application/json"

    def serialize(self, event: BaseEvent) -> bytes:
        # pydantic-core writes the JSON bytes directly (the same bytes as orjson over
        # model_dump(mode="json"), in half the time).
        return event.__pydantic_serializer__.to_json(event)


def serializer_for(name: str) -> EventSerializer:
    """The serializer for `KAFKA_SERIALIZATION`."""
    if name == "json":
        return JsonSerializer()
    if name == "protobuf":
        # Imported only when chosen: protobuf and the generated module add ~3 MB to every worker.
        from app.serialization.protobuf import ProtobufSerializer

        return ProtobufSerializer()
    raise ValueError(f"unknown serialization {name!r}: expected json or protobuf")
