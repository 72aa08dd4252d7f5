"""What an event type is: the definition an operator registers, and the view the API answers with."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from app.event_types.compatibility import Compatibility
from app.event_types.schemas import check_schema
from event_models.models import REGISTERED_TYPE_NAME

# Lowercase and dotted (`workflow.task_completed`): never one of the built-in types or routes
# (`attempts`, `batch`), which have no dot.
NAME_PATTERN = REGISTERED_TYPE_NAME
TypeName = Annotated[str, Field(min_length=3, max_length=128, pattern=NAME_PATTERN)]
FieldName = Annotated[str, Field(min_length=1, max_length=128)]
ENVELOPE_KEYS = ("user_id", "tenant_id", "course_id")  # envelope fields a key or an identity may use


class EventTypeChanges(BaseModel):
    """What `PATCH` may change; the schema changes only through a new version."""

    model_config = ConfigDict(extra="forbid")

    description: Annotated[str, Field(max_length=2000)] | None = None
    owner: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    enabled: bool | None = None


class EventTypeDefinition(BaseModel):
    """A custom event type: its own fields' JSON Schema and how its events are keyed and identified.

    Every event also carries the envelope the service checks itself (`event_id`, `user_id`,
    `occurred_at`, `metadata`, `tenant_id`, `course_id`, `schema_version`, `received_at`).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: TypeName = Field(description="Lowercase and dotted, e.g. `workflow.task_completed`; unique.")
    description: Annotated[str, Field(max_length=2000)] = ""
    owner: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="The team or person to ask about this type."
    )
    schema_: dict[str, JsonValue] = Field(
        alias="schema",
        description='JSON Schema 2020-12 of the type\'s own fields ("type": "object"; no envelope fields).',
    )
    partition_key: FieldName = Field(
        "user_id", description="The field whose value is the Kafka key: `user_id` or a field of the schema."
    )
    idempotency_fields: Annotated[list[FieldName], Field(min_length=1, max_length=8)] | None = Field(
        None,
        description="Fields that together identify a repeat (answered `duplicate`), e.g. "
        '`["user_id", "run_id"]`; an event missing one of them is not checked.',
    )
    compatibility: Compatibility = Field(
        Compatibility.BACKWARD,
        description="How a new schema version must relate to the previous one (Confluent's meaning).",
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _fields_exist(self) -> EventTypeDefinition:
        check_schema(self.schema_, self.compatibility)
        check_fields(self.schema_, self.partition_key, self.idempotency_fields)
        return self


def check_fields(schema: dict[str, Any], partition_key: str, identity: list[str] | None) -> None:
    """The key and identity fields must be envelope keys or top-level fields of the schema."""
    known = set(ENVELOPE_KEYS) | set(schema.get("properties") or {})
    for role, names in (("partition_key", [partition_key]), ("idempotency_fields", identity or [])):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"{role} names {', '.join(unknown)}: not a field of the schema nor one of "
                f"{', '.join(ENVELOPE_KEYS)}"
            )


class EventTypeView(BaseModel):
    """An event type as the API shows it: the latest version's schema, and every version's number."""

    name: str
    description: str
    owner: str
    schema_: dict[str, Any] = Field(alias="schema")
    partition_key: str
    idempotency_fields: list[str] | None
    compatibility: Compatibility
    enabled: bool
    version: int = Field(description="The latest schema version; events carry it as `schema_version`.")
    versions: list[int]
    builtin: bool = Field(description="One of the four built-in types: read-only, schema from its model.")
    created_at: datetime | None
    updated_at: datetime | None
