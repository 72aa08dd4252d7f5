"""The router and its conditions: the five default rules, priorities, de-duplication, operators."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from app.config.settings import load_settings
from app.routing.conditions import Condition
from app.routing.router import Router
from app.routing.rules import RoutingRule, default_rules
from event_models.models import ActivityEvent, AttemptEvent, BaseEvent, PlacementEvent, SessionEvent
from tests.conftest import activity_event, attempt, placement_event, session_event

SETTINGS = load_settings(_env_file=None)
CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)


@pytest.fixture
def router() -> Router:
    return Router(default_rules(SETTINGS))


@pytest.mark.parametrize(
    ("event", "topics"),
    [
        (AttemptEvent.model_validate(attempt(quality=4)), ["ml.training_events", "user.attempts"]),
        (AttemptEvent.model_validate(attempt(quality=3)), ["user.attempts"]),
        (SessionEvent.model_validate(session_event(items_attempted=1, items_correct=0)), ["user.sessions"]),
        (SessionEvent.model_validate(session_event(items_attempted=0, items_correct=0)), []),
        (
            PlacementEvent.model_validate(placement_event(status="completed")),
            ["user.placements", "ml.training_events"],
        ),
        (PlacementEvent.model_validate(placement_event(status="abandoned")), []),
        (ActivityEvent.model_validate(activity_event()), ["user.activities"]),
    ],
)
def test_default_rules(router: Router, event: BaseEvent, topics: list[str]) -> None:
    route = router.route(event)
    assert list(route.topics) == topics
    assert route.unrouted == (not topics)


def test_topics_are_deduplicated_and_ordered_by_priority_then_id() -> None:
    rules = [
        RoutingRule(id="b", name="b", event_types=["activity"], topics=["two", "one"], priority=5),
        RoutingRule(id="a", name="a", event_types=["activity"], topics=["one", "three"], priority=5),
        RoutingRule(id="c", name="c", event_types=["activity"], topics=["zero"], priority=1),
        RoutingRule(id="d", name="d", event_types=["activity"], topics=["off"], enabled=False),
    ]
    route = Router(rules).route(ActivityEvent.model_validate(activity_event()))

    assert route.topics == ("zero", "one", "three", "two")
    assert route.rule_ids == ("c", "a", "b")


@pytest.mark.parametrize(
    ("quality", "time_taken_ms", "rule_ids"),
    [
        (5, 10, ("high", "all", "quick")),
        (5, 9000, ("high", "all")),
        (1, 10, ("all", "quick")),
        (1, 9000, ("all",)),
    ],
)
def test_conditions_and_plain_rules_of_a_type_match_in_priority_order(
    quality: int, time_taken_ms: int, rule_ids: tuple[str, ...]
) -> None:
    # Only the conditions are tested for an event; their outcomes pick the cached Route, so the
    # rules without a condition must keep their place between the conditioned ones.
    rules = [
        RoutingRule(id="quick", name="quick", event_types=["attempt"], topics=["quick"], priority=3,
                    condition=CONDITION.validate_python({"field": "time_taken_ms", "op": "<", "value": 100})),
        RoutingRule(id="all", name="all", event_types=["attempt"], topics=["all"], priority=2),
        RoutingRule(id="high", name="high", event_types=["attempt"], topics=["high"], priority=1,
                    condition=CONDITION.validate_python({"field": "quality", "op": ">=", "value": 4})),
    ]  # fmt: skip
    router = Router(rules)
    event = AttemptEvent.model_validate(attempt(quality=quality, time_taken_ms=time_taken_ms))

    first = router.route(event)
    assert first.rule_ids == rule_ids
    assert first.topics == rule_ids
    assert (
        router.route(AttemptEvent.model_validate(attempt(quality=quality, time_taken_ms=time_taken_ms)))
        is first
    )
    assert router.route(ActivityEvent.model_validate(activity_event())).unrouted


def test_duplicate_rule_ids_are_refused() -> None:
    rule = RoutingRule(id="x", name="x", event_types=["activity"], topics=["t"])
    with pytest.raises(ValueError, match="unique"):
        Router([rule, rule])


def test_rule_refuses_an_illegal_topic_name() -> None:
    with pytest.raises(ValidationError, match="not a legal Kafka topic name"):
        RoutingRule(id="x", name="x", event_types=["activity"], topics=["has space"])


EVENT = ActivityEvent.model_validate(
    activity_event(activity_type="video_watched", metadata={"source": "ios-app"}, properties={"seconds": 42})
)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"field": "activity_type", "op": "==", "value": "video_watched"}, True),
        ({"field": "activity_type", "op": "!=", "value": "video_watched"}, False),
        ({"field": "properties.seconds", "op": ">", "value": 40}, True),
        ({"field": "properties.seconds", "op": "<=", "value": 40}, False),
        ({"field": "properties.seconds", "op": "<", "value": "a string"}, False),
        ({"field": "activity_type", "op": "in", "value": ["a", "video_watched"]}, True),
        ({"field": "metadata.source", "op": "exists"}, True),
        ({"field": "metadata.other", "op": "exists"}, False),
        ({"field": "metadata.other", "op": "exists", "value": False}, True),
        ({"field": "object_id", "op": "exists"}, False),
        ({"field": "metadata.source", "op": "prefix", "value": "ios"}, True),
        ({"field": "metadata.source", "op": "regex", "value": "^android"}, False),
        (
            {
                "all": [
                    {"field": "user_id", "op": "==", "value": "user-1"},
                    {"not": {"field": "metadata.source", "op": "==", "value": "web"}},
                ]
            },
            True,
        ),
        (
            {
                "any": [
                    {"field": "user_id", "op": "==", "value": "nobody"},
                    {"field": "event_type", "op": "==", "value": "activity"},
                ]
            },
            True,
        ),
        ({"any": []}, False),
        ({"all": []}, True),
    ],
)
def test_condition_operators(condition: dict[str, Any], expected: bool) -> None:
    assert CONDITION.validate_python(condition).matches(EVENT) is expected


@pytest.mark.parametrize(
    "condition",
    [
        {"field": "x", "op": "~=", "value": 1},
        {"field": "x", "op": "in", "value": 1},
        {"field": "x", "op": "regex", "value": "("},
        {"field": "x", "op": "regex", "value": "a" * 300},
        {"field": "__import__('os')", "op": "==", "value": 1},
        {"every": []},
    ],
)
def test_bad_conditions_are_refused_when_loaded(condition: dict[str, Any]) -> None:
    with pytest.raises((ValidationError, ValueError)):
        CONDITION.validate_python(condition)
