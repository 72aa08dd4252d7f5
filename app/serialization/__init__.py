"""Serialization: an event model to the bytes written to Kafka (JSON or Protocol Buffers)."""

from app.serialization.codecs import EventSerializer, JsonSerializer, ProtobufSerializer, serializer_for

__all__ = ["EventSerializer", "JsonSerializer", "ProtobufSerializer", "serializer_for"]
