"""Custom event types in the database: the tables the admin API edits, and their version counter.

Every change bumps the counter in the same transaction; every worker and instance polls it and
reloads the types when it moved (as routing rules do), so a change reaches all of them within a
poll interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit.trail import Actor, AuditEntry
from app.database.schema import EventTypesVersion, StoredEventType, StoredEventTypeVersion
from app.database.version_counter import bump_version, read_version, version_in
from app.event_types.compatibility import Compatibility, incompatibilities
from app.event_types.definition import EventTypeChanges, EventTypeDefinition, check_fields
from app.event_types.schemas import check_schema


class UnknownEventTypeError(LookupError):
    pass


class EventTypeConflictError(ValueError):
    """The change cannot be made as asked (409): the name is taken, or the schema breaks compatibility."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class TooManyEventTypesError(ValueError):
    pass


@dataclass(slots=True)
class EventTypeRecord:
    """A custom type as stored: its definition, and every schema version by number."""

    name: str
    description: str
    owner: str
    partition_key: str
    idempotency_fields: list[str] | None
    compatibility: Compatibility
    enabled: bool
    version: int
    schemas: dict[int, dict[str, Any]] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def audit_form(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "owner": self.owner,
            "partition_key": self.partition_key,
            "idempotency_fields": self.idempotency_fields,
            "compatibility": self.compatibility.value,
            "enabled": self.enabled,
            "version": self.version,
        }


def _record(row: StoredEventType, schemas: dict[int, dict[str, Any]]) -> EventTypeRecord:
    return EventTypeRecord(
        name=row.name,
        description=row.description,
        owner=row.owner,
        partition_key=row.partition_key,
        idempotency_fields=row.idempotency_fields,
        compatibility=Compatibility(row.compatibility),
        enabled=row.enabled,
        version=row.version,
        schemas=schemas,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class EventTypeStore:
    """The `event_types` and `event_type_versions` tables (synchronous; callers use asyncio.to_thread)."""

    def __init__(self, engine: Engine, max_types: int) -> None:
        self.engine = engine
        self.max_types = max_types

    def version(self) -> int:
        return read_version(self.engine, EventTypesVersion)

    def load(self) -> tuple[int, list[EventTypeRecord]]:
        """The counter, then the types, then their versions: each read may see later commits than
        the one before (no snapshot across statements), so a change made meanwhile leaves the
        counter behind (the next poll reloads) and every type's version among those read."""
        with Session(self.engine) as session:
            version = version_in(session, EventTypesVersion)
            rows = list(session.scalars(select(StoredEventType).order_by(StoredEventType.name)))
            schemas: dict[str, dict[int, dict[str, Any]]] = {}
            for stored in session.scalars(select(StoredEventTypeVersion)):
                schemas.setdefault(stored.name, {})[stored.version] = stored.schema
            return version, [_record(row, schemas.get(row.name, {})) for row in rows]

    def register(self, definition: EventTypeDefinition, actor: Actor) -> EventTypeRecord:
        """A new type at version 1; EventTypeConflictError when the name is taken."""
        try:
            with Session(self.engine) as session, session.begin():
                now = datetime.now(UTC)
                bump_version(session, EventTypesVersion, now)
                if session.get(StoredEventType, definition.name) is not None:
                    raise EventTypeConflictError(f"event type {definition.name} exists")
                count = session.scalar(select(func.count()).select_from(StoredEventType)) or 0
                if count >= self.max_types:
                    raise TooManyEventTypesError(
                        f"at most {self.max_types} event types may be registered (EVENT_TYPES_MAX)"
                    )
                row = StoredEventType(
                    name=definition.name,
                    description=definition.description,
                    owner=definition.owner,
                    partition_key=definition.partition_key,
                    idempotency_fields=definition.idempotency_fields,
                    compatibility=definition.compatibility.value,
                    enabled=definition.enabled,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                session.add(
                    StoredEventTypeVersion(
                        name=definition.name, version=1, schema=definition.schema_, created_at=now
                    )
                )
                record = _record(row, {1: definition.schema_})
                AuditEntry(
                    actor,
                    "event_type.create",
                    definition.name,
                    None,
                    {**record.audit_form(), "schema": definition.schema_},
                ).add(session)
                return record
        except IntegrityError:  # registered by another worker or instance at the same moment
            raise EventTypeConflictError(f"event type {definition.name} exists") from None

    def add_version(self, name: str, schema: dict[str, Any], actor: Actor) -> EventTypeRecord:
        """The next schema version, checked against the latest under the type's compatibility mode."""
        with Session(self.engine) as session, session.begin():
            row = session.get(StoredEventType, name, with_for_update=True)
            if row is None:
                raise UnknownEventTypeError(name)
            compatibility = Compatibility(row.compatibility)
            check_schema(schema, compatibility)
            check_fields(schema, row.partition_key, row.idempotency_fields)
            latest = session.get(StoredEventTypeVersion, (name, row.version))
            old = latest.schema if latest is not None else {}
            if old == schema:
                raise EventTypeConflictError(f"the schema is version {row.version}'s already")
            problems = incompatibilities(old, schema, compatibility)
            if problems:
                raise EventTypeConflictError(
                    f"the schema is not {compatibility.value}-compatible with version {row.version}", problems
                )
            now = datetime.now(UTC)
            bump_version(session, EventTypesVersion, now)
            row.version += 1
            row.updated_at = now
            session.add(StoredEventTypeVersion(name=name, version=row.version, schema=schema, created_at=now))
            AuditEntry(
                actor,
                "event_type.new_version",
                name,
                {"version": row.version - 1},
                {"version": row.version, "schema": schema},
            ).add(session)
            schemas = {
                stored.version: stored.schema
                for stored in session.scalars(
                    select(StoredEventTypeVersion).where(StoredEventTypeVersion.name == name)
                )
            }
            return _record(row, schemas)

    def change(self, name: str, changes: EventTypeChanges, actor: Actor) -> EventTypeRecord:
        with Session(self.engine) as session, session.begin():
            row = session.get(StoredEventType, name, with_for_update=True)
            if row is None:
                raise UnknownEventTypeError(name)
            schemas = {
                stored.version: stored.schema
                for stored in session.scalars(
                    select(StoredEventTypeVersion).where(StoredEventTypeVersion.name == name)
                )
            }
            before = _record(row, schemas).audit_form()
            now = datetime.now(UTC)
            for key, value in changes.model_dump(exclude_none=True).items():
                setattr(row, key, value)
            row.updated_at = now
            bump_version(session, EventTypesVersion, now)
            record = _record(row, schemas)
            AuditEntry(actor, "event_type.update", name, before, record.audit_form()).add(session)
            return record
