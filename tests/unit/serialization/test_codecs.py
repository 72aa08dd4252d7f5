"""Both wire formats carry the same normalized event."""

from __future__ import annotations

import orjson

from app.serialization import JsonSerializer, serializer_for
from app.serialization.generated import events_pb2
from app.serialization.protobuf import ProtobufSerializer
from event_models.models import ActivityEvent, AttemptEvent, PlacementEvent, SessionEvent
from tests.conftest import activity_event, at, attempt, placement_event, session_event


def test_json_is_the_normalized_event() -> None:
    event = AttemptEvent.model_validate(attempt(occurred_at="2026-11-24T12:00:00-05:00"))
    value = orjson.loads(JsonSerializer().serialize(event))

    assert value["event_id"] == str(event.event_id)
    assert value["event_type"] == "attempt"
    assert value["occurred_at"] == "2026-11-24T17:00:00Z"


def test_protobuf_round_trips_every_event_type() -> None:
    codec = ProtobufSerializer()
    session = SessionEvent.model_validate(session_event())
    decoded = events_pb2.Event.FromString(codec.serialize(session))
    assert decoded.WhichOneof("payload") == "session"
    assert decoded.session.status == events_pb2.STATUS_COMPLETED
    assert decoded.session.ended_at.ToJsonString() == at(30)

    placement = PlacementEvent.model_validate(placement_event(score=0.25))
    decoded = events_pb2.Event.FromString(codec.serialize(placement))
    assert decoded.placement.score == 0.25
    assert decoded.placement.level == "A2"

    activity = ActivityEvent.model_validate(
        activity_event(metadata={"k": "v"}, properties={"n": 1, "l": [True]})
    )
    decoded = events_pb2.Event.FromString(codec.serialize(activity))
    assert dict(decoded.metadata) == {"k": "v"}
    assert decoded.activity.properties["n"] == 1
    assert decoded.activity.properties.fields["l"].list_value.values[0].bool_value is True

    attempt_event = AttemptEvent.model_validate(attempt(answer=None))
    decoded = events_pb2.Event.FromString(codec.serialize(attempt_event))
    assert not decoded.attempt.HasField("answer")
    assert decoded.event_id == str(attempt_event.event_id)


def test_serializer_for_names() -> None:
    assert serializer_for("json").content_type == "application/json"
    assert serializer_for("protobuf").content_type.startswith("application/x-protobuf")
