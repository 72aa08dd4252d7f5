"""Serialization: an event model to the bytes written to Kafka (JSON or Protocol Buffers).

The Protocol Buffers codec lives in `app.serialization.protobuf`, imported only when chosen.
"""

from app.serialization.codecs import EventSerializer, JsonSerializer, serializer_for

__all__ = ["EventSerializer", "JsonSerializer", "serializer_for"]
