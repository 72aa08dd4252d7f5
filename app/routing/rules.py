"""Routing rules as data, and the default rules of the Go publisher we replace."""

from __future__ import annotations

import re
from typing import Annotated

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from app.config.settings import Settings
from app.routing.conditions import Condition, FieldTest
from app.routing.templates import unknown_variables
from app.routing.topics import check_topic_name
from event_models.models import REGISTERED_TYPE_NAME, BaseEvent, EventType

TopicName = Annotated[str, AfterValidator(check_topic_name)]
_BUILTIN_TYPES = frozenset(kind.value for kind in EventType)
_REGISTERED_NAME = re.compile(REGISTERED_TYPE_NAME)


def _event_type_name(name: str) -> str:
    if name not in _BUILTIN_TYPES and not _REGISTERED_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is neither a built-in event type ({', '.join(sorted(_BUILTIN_TYPES))}) "
            "nor a registered type's name (lowercase and dotted)"
        )
    return name


EventTypeName = Annotated[str, Field(max_length=128), AfterValidator(_event_type_name)]


class RoutingRule(BaseModel):
    """Send events of `event_types` that satisfy `condition` to every topic in `topics`.

    Rules are evaluated by ascending `priority` (ties broken by `id`); every matching enabled
    rule contributes its topics.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    event_types: Annotated[list[EventTypeName], Field(min_length=1)] = Field(
        description="Built-in types (`attempt`, ...) or registered ones (`workflow.task_completed`)."
    )
    condition: Condition | None = Field(None, description="No condition matches every event of the types.")
    topics: Annotated[list[TopicName], Field(min_length=1, max_length=32)]
    priority: int = 100
    enabled: bool = True
    key_template: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(
        None, description='The Kafka key, e.g. "{session_id}"; default: the user_id.'
    )
    message_template: dict[str, JsonValue] | None = Field(
        None,
        description="The record's shape, fields mapped to {variable} placeholders; default: the full event.",
    )

    @model_validator(mode="after")
    def _templates_use_known_variables(self) -> RoutingRule:
        for name, template in (
            ("key_template", self.key_template),
            ("message_template", self.message_template),
        ):
            unknown = unknown_variables(template, self.event_types)
            if unknown:
                raise ValueError(
                    f"{name} uses unknown variable(s) {', '.join(unknown)} for event types "
                    f"{', '.join(sorted(self.event_types))}"
                )
        if self.message_template == {}:
            # `{}` would publish an empty object for every event: surely not what was meant.
            raise ValueError("message_template maps no field: leave it out to publish the full event")
        if self.message_template is not None and len(orjson.dumps(self.message_template)) > 16_384:
            raise ValueError("message_template must be at most 16 KiB of JSON")
        return self

    def matches(self, event: BaseEvent) -> bool:
        return (
            self.enabled
            and event.event_type in self.event_types
            and (self.condition is None or self.condition.matches(event))
        )


def default_rules(settings: Settings) -> list[RoutingRule]:
    """The five rules the existing service ships with, pointed at the configured topics."""
    return [
        RoutingRule(
            id="ml-training-high-quality-attempts",
            name="Attempts with quality >= 4 feed ML training",
            event_types=[EventType.ATTEMPT],
            condition=FieldTest(field="quality", op=">=", value=4),
            topics=[settings.kafka_topic_ml_training],
            priority=10,
        ),
        RoutingRule(
            id="all-attempts",
            name="Every attempt",
            event_types=[EventType.ATTEMPT],
            topics=[settings.kafka_topic_attempts],
            priority=20,
        ),
        RoutingRule(
            id="sessions-with-items",
            name="Sessions in which at least one item was attempted",
            event_types=[EventType.SESSION],
            condition=FieldTest(field="items_attempted", op=">", value=0),
            topics=[settings.kafka_topic_sessions],
            priority=30,
        ),
        RoutingRule(
            id="completed-placements",
            name="Completed placement tests, also for ML training",
            event_types=[EventType.PLACEMENT],
            condition=FieldTest(field="status", op="==", value="completed"),
            topics=[settings.kafka_topic_placements, settings.kafka_topic_ml_training],
            priority=40,
        ),
        RoutingRule(
            id="all-activities",
            name="Every activity",
            event_types=[EventType.ACTIVITY],
            topics=[settings.kafka_topic_activities],
            priority=50,
        ),
    ]
