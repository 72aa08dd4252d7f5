"""The Protocol Buffers wire format: `event_ingest.v1.Event` from proto/events.proto."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from app.serialization.generated import events_pb2
from event_models.models import ActivityEvent, AttemptEvent, BaseEvent, PlacementEvent, SessionEvent


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


_STATUS = {
    "started": events_pb2.STATUS_STARTED,
    "completed": events_pb2.STATUS_COMPLETED,
    "abandoned": events_pb2.STATUS_ABANDONED,
}


class ProtobufSerializer:
    """`event_ingest.v1.Event` from proto/events.proto."""

    content_type = "application/x-protobuf; messageType=event_ingest.v1.Event"

    def serialize(self, event: BaseEvent) -> bytes:
        message = events_pb2.Event(
            event_id=str(event.event_id),
            event_type=event.event_type,
            user_id=event.user_id,
            occurred_at=_timestamp(event.occurred_at),
            received_at=_timestamp(event.received_at),
            metadata=event.metadata,
            schema_version=event.schema_version,
            tenant_id=event.tenant_id,
            course_id=event.course_id,
        )
        if isinstance(event, AttemptEvent):
            message.attempt.CopyFrom(
                events_pb2.Attempt(
                    client_attempt_id=event.client_attempt_id,
                    item_id=event.item_id,
                    session_id=event.session_id,
                    correct=event.correct,
                    quality=event.quality,
                    time_taken_ms=event.time_taken_ms,
                    answer=event.answer,
                    attempt_number=event.attempt_number,
                    hints_used=event.hints_used,
                )
            )
        elif isinstance(event, SessionEvent):
            session = events_pb2.Session(
                session_id=event.session_id,
                status=_STATUS[event.status.value],
                items_attempted=event.items_attempted,
                items_correct=event.items_correct,
            )
            if event.started_at is not None:
                session.started_at.CopyFrom(_timestamp(event.started_at))
            if event.ended_at is not None:
                session.ended_at.CopyFrom(_timestamp(event.ended_at))
            message.session.CopyFrom(session)
        elif isinstance(event, PlacementEvent):
            message.placement.CopyFrom(
                events_pb2.Placement(
                    placement_id=event.placement_id,
                    test_id=event.test_id,
                    status=_STATUS[event.status.value],
                    score=event.score,
                    level=event.level,
                    subject=event.subject,
                )
            )
        elif isinstance(event, ActivityEvent):
            properties = Struct()
            properties.update(event.properties)
            message.activity.CopyFrom(
                events_pb2.Activity(
                    activity_type=event.activity_type,
                    object_id=event.object_id,
                    duration_ms=event.duration_ms,
                    properties=properties,
                )
            )
        else:  # pragma: no cover - the four models above are the whole union
            raise TypeError(f"no protobuf mapping for {type(event).__name__}")
        return message.SerializeToString()
