"""Pydantic v2 models of the four learning events.

Every bound is explicit so that one client cannot post unbounded strings or maps; unknown fields
are refused so that a misspelt field name is an error the client sees, not data silently dropped.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Annotated, Any, ClassVar, Literal, Self, overload

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from event_models.ids import new_event_id

MAX_METADATA_ENTRIES = 32
MAX_PROPERTIES_BYTES = 16 * 1024
MAX_PROPERTIES_DEPTH = 5


class EventType(StrEnum):
    """The kinds of event the service accepts; the value is the `event_type` on the wire."""

    ATTEMPT = "attempt"
    SESSION = "session"
    PLACEMENT = "placement"
    ACTIVITY = "activity"


class Status(StrEnum):
    """Lifecycle of a session or a placement test."""

    STARTED = "started"
    COMPLETED = "completed"
    ABANDONED = "abandoned"


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _bounded_json(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    if len(orjson.dumps(value)) > MAX_PROPERTIES_BYTES:
        raise ValueError(f"must serialize to at most {MAX_PROPERTIES_BYTES} bytes of JSON")
    if _depth(value) > MAX_PROPERTIES_DEPTH:
        raise ValueError(f"must nest at most {MAX_PROPERTIES_DEPTH} levels deep")
    return value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
ShortText = Annotated[str, StringConstraints(max_length=256)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=1024)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_ENTRIES)]
Properties = Annotated[dict[str, JsonValue], AfterValidator(_bounded_json)]


class _EventIdText:
    """`event_id` as text: computed on first read, then kept in the instance's `__dict__`, where
    later reads find it (a non-data descriptor). `functools.cached_property` does the same but on
    Python 3.11 takes a lock for each first read, and every event's id is read."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name  # the `__dict__` entry that shadows this descriptor once computed

    @overload
    def __get__(self, instance: None, owner: type) -> Self: ...
    @overload
    def __get__(self, instance: BaseEvent, owner: type) -> str: ...
    def __get__(self, instance: BaseEvent | None, owner: type) -> str | Self:
        if instance is None:
            return self
        text: str = str(instance.event_id)
        instance.__dict__[self._name] = text
        return text


class BaseEvent(BaseModel):
    """Fields every event carries. The server fills `event_id` and `received_at`."""

    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(description="Which kind of event this is; fixed per endpoint.")
    event_id: uuid.UUID = Field(
        default_factory=new_event_id,
        description="Unique id of the event; assigned by the server when absent. Re-sending an id "
        "marks the same event.",
    )
    user_id: Identifier = Field(description="Learner the event is about; the Kafka key by default.")
    occurred_at: UtcDatetime = Field(
        description="When it happened, RFC 3339 with an offset (naive times are refused); stored in UTC."
    )
    metadata: Metadata = Field(
        default_factory=dict,
        description=f"Free string→string map, at most {MAX_METADATA_ENTRIES} entries.",
    )
    schema_version: StrictInt = Field(1, ge=1, le=1000)
    tenant_id: Identifier | None = Field(None, description="Organisation or school, for multi-tenant use.")
    course_id: Identifier | None = Field(None, description="Course or curriculum the event belongs to.")
    received_at: datetime = Field(
        default_factory=partial(datetime.now, UTC),  # a C call: no Python frame per event
        description="Set by the server when the event arrives; a client value is ignored.",
        json_schema_extra={"readOnly": True},
    )

    @field_validator("received_at", mode="before")
    @classmethod
    def _server_clock(cls, value: Any) -> datetime:
        # received_at is the server's clock, never the client's. (A field validator runs only when
        # a client sends the field; the default factory serves every other event without a
        # Python call, which a model validator would cost each one.)
        return datetime.now(UTC)

    builtin: ClassVar[bool] = True  # one of the four types above; False for registered types

    def kafka_key(self) -> str:
        """The record key: the learner, so one learner's events stay in order."""
        return self.user_id

    # `event_id` as text: computed once, used in headers, answers and idempotency records.
    event_id_text: ClassVar[_EventIdText] = _EventIdText()

    def field_value(self, path: str) -> Any:
        """Value at a dotted path (`quality`, `metadata.source`); `KeyError` when absent."""
        head, _, rest = path.partition(".")
        # __pydantic_fields__ is the dict behind `model_fields`, without its (deprecated-access) descriptor.
        value: Any = getattr(self, head) if head in type(self).__pydantic_fields__ else _missing(path)
        for part in rest.split(".") if rest else ():
            if isinstance(value, dict) and part in value:
                value = value[part]
            else:
                _missing(path)
        return value


def _missing(path: str) -> Any:
    raise KeyError(path)


class AttemptEvent(BaseEvent):
    """A learner answered an item."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "user-42",
                    "occurred_at": "2026-11-24T10:15:00+01:00",
                    "client_attempt_id": "c0a8-0001",
                    "item_id": "item-17",
                    "session_id": "session-9",
                    "correct": True,
                    "quality": 5,
                    "time_taken_ms": 5300,
                }
            ]
        }
    )

    event_type: Literal["attempt"] = Field("attempt", description="Always `attempt`.")
    client_attempt_id: Identifier = Field(description="Client's id of this attempt; used to drop repeats.")
    item_id: Identifier
    session_id: Identifier | None = None
    correct: StrictBool
    quality: StrictInt = Field(ge=0, le=5, description="Answer quality 0-5 (SM-2 scale).")
    time_taken_ms: StrictInt = Field(ge=0, le=86_400_000)
    answer: Annotated[str, StringConstraints(max_length=4096)] | None = None
    attempt_number: StrictInt | None = Field(None, ge=1, le=10_000, description="1 for a first try.")
    hints_used: StrictInt | None = Field(None, ge=0, le=1000)


class SessionEvent(BaseEvent):
    """A study session started, ended or was abandoned."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "user-42",
                    "occurred_at": "2026-11-24T10:30:00Z",
                    "session_id": "session-9",
                    "status": "completed",
                    "started_at": "2026-11-24T10:00:00Z",
                    "ended_at": "2026-11-24T10:30:00Z",
                    "items_attempted": 20,
                    "items_correct": 17,
                }
            ]
        }
    )

    event_type: Literal["session"] = Field("session", description="Always `session`.")
    session_id: Identifier
    status: Status = Status.STARTED
    started_at: UtcDatetime | None = None
    ended_at: UtcDatetime | None = None
    items_attempted: StrictInt = Field(0, ge=0, le=1_000_000)
    items_correct: StrictInt = Field(0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.started_at and self.ended_at and self.ended_at < self.started_at:
            raise ValueError("ended_at must not be before started_at")
        if self.items_correct > self.items_attempted:
            raise ValueError("items_correct must be between 0 and items_attempted")
        return self


class PlacementEvent(BaseEvent):
    """A placement test started, was completed or abandoned."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "user-42",
                    "occurred_at": "2026-11-24T11:00:00Z",
                    "placement_id": "placement-3",
                    "test_id": "spanish-a1",
                    "status": "completed",
                    "score": 0.82,
                    "level": "A2",
                }
            ]
        }
    )

    event_type: Literal["placement"] = Field("placement", description="Always `placement`.")
    placement_id: Identifier
    test_id: Identifier | None = None
    status: Status = Status.STARTED
    score: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    level: ShortText | None = None
    subject: ShortText | None = None


class ActivityEvent(BaseEvent):
    """Anything else a learner did (opened a lesson, watched a video...)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "user-42",
                    "occurred_at": "2026-11-24T11:05:00Z",
                    "activity_type": "lesson_opened",
                    "properties": {"lesson_id": "L-5", "duration_ms": 120000},
                }
            ]
        }
    )

    event_type: Literal["activity"] = Field("activity", description="Always `activity`.")
    activity_type: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    object_id: Identifier | None = Field(None, description="What the activity was about (lesson, video).")
    duration_ms: StrictInt | None = Field(None, ge=0, le=86_400_000)
    properties: Properties = Field(
        default_factory=dict,
        description=f"Free JSON object, at most {MAX_PROPERTIES_BYTES} bytes and "
        f"{MAX_PROPERTIES_DEPTH} levels deep.",
    )


REGISTERED_TYPE_NAME = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"  # lowercase, dotted: never a built-in


class RegisteredTypeEvent(BaseEvent):
    """An event of a type registered at run time (`workflow.task_completed`): the envelope above,
    checked here, and the type's own fields, which its JSON Schema in the service checks."""

    model_config = ConfigDict(extra="allow")
    builtin: ClassVar[bool] = False

    event_type: str = Field(pattern=REGISTERED_TYPE_NAME, max_length=128)

    @property
    def fields(self) -> dict[str, Any]:
        """The type's own fields (everything outside the envelope)."""
        return self.__pydantic_extra__ or {}


AnyEvent = Annotated[
    AttemptEvent | SessionEvent | PlacementEvent | ActivityEvent, Field(discriminator="event_type")
]

MODEL_BY_TYPE: dict[EventType, type[BaseEvent]] = {
    EventType.ATTEMPT: AttemptEvent,
    EventType.SESSION: SessionEvent,
    EventType.PLACEMENT: PlacementEvent,
    EventType.ACTIVITY: ActivityEvent,
}
