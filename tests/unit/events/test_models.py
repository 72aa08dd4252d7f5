"""Event models: required fields, bounds, UTC normalization, server-assigned fields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from event_models.models import ActivityEvent, AttemptEvent, PlacementEvent, SessionEvent
from tests.conftest import activity_event, attempt, placement_event, session_event


def _fields(error: ValidationError) -> set[str]:
    return {".".join(str(part) for part in item["loc"]) for item in error.errors()}


def test_attempt_is_normalized_to_utc_and_gets_an_event_id() -> None:
    event = AttemptEvent.model_validate(attempt(occurred_at="2026-11-24T10:15:00+01:00"))

    assert event.occurred_at == datetime(2026, 11, 24, 9, 15, tzinfo=UTC)
    assert isinstance(event.event_id, uuid.UUID)
    assert event.received_at.tzinfo is UTC
    assert event.model_dump(mode="json")["occurred_at"] == "2026-11-24T09:15:00Z"


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        AttemptEvent.model_validate(attempt(occurred_at="2026-11-24T10:15:00"))
    assert _fields(raised.value) == {"occurred_at"}


def test_client_cannot_set_received_at() -> None:
    event = ActivityEvent.model_validate(activity_event(received_at="2000-01-01T00:00:00Z"))
    assert event.received_at.year >= 2026


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"quality": 6}, "quality"),
        ({"quality": -1}, "quality"),
        ({"quality": "5"}, "quality"),
        ({"correct": "true"}, "correct"),
        ({"time_taken_ms": -1}, "time_taken_ms"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"answer": "x" * 5000}, "answer"),
        ({"metadata": {f"k{i}": "v" for i in range(33)}}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"event_type": "session"}, "event_type"),
    ],
)
def test_attempt_bounds(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        AttemptEvent.model_validate(attempt(**change))
    assert field in _fields(raised.value)


@pytest.mark.parametrize(
    "missing", ["client_attempt_id", "item_id", "correct", "quality", "time_taken_ms", "user_id"]
)
def test_attempt_required_fields(missing: str) -> None:
    data = attempt()
    del data[missing]
    with pytest.raises(ValidationError) as raised:
        AttemptEvent.model_validate(data)
    assert _fields(raised.value) == {missing}


def test_session_ended_before_started_is_refused() -> None:
    with pytest.raises(ValidationError, match="ended_at must not be before started_at"):
        SessionEvent.model_validate(
            session_event(started_at="2026-11-24T11:00:00Z", ended_at="2026-11-24T10:00:00Z")
        )


def test_session_more_correct_than_attempted_is_refused() -> None:
    with pytest.raises(ValidationError, match="items_correct must be between 0 and items_attempted"):
        SessionEvent.model_validate(session_event(items_attempted=2, items_correct=3))


@pytest.mark.parametrize("status", ["done", "COMPLETED", ""])
def test_session_status_is_an_enumeration(status: str) -> None:
    with pytest.raises(ValidationError):
        SessionEvent.model_validate(session_event(status=status))


@pytest.mark.parametrize("score", [-0.1, 1.1, "nan"])
def test_placement_score_is_between_0_and_1(score: object) -> None:
    with pytest.raises(ValidationError) as raised:
        PlacementEvent.model_validate(placement_event(score=score))
    assert _fields(raised.value) == {"score"}


def test_activity_properties_are_bounded_in_depth_and_size() -> None:
    deep: dict[str, Any] = {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}
    with pytest.raises(ValidationError, match="levels deep"):
        ActivityEvent.model_validate(activity_event(properties=deep))
    with pytest.raises(ValidationError, match="bytes of JSON"):
        ActivityEvent.model_validate(activity_event(properties={"blob": "x" * 20_000}))


def test_field_value_reads_nested_paths() -> None:
    event = ActivityEvent.model_validate(
        activity_event(metadata={"source": "ios"}, properties={"a": {"b": 2}})
    )

    assert event.field_value("metadata.source") == "ios"
    assert event.field_value("properties.a.b") == 2
    assert event.field_value("event_type") == "activity"
    with pytest.raises(KeyError):
        event.field_value("properties.a.missing")
    with pytest.raises(KeyError):
        event.field_value("no_such_field")
