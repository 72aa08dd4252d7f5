"""This worker's view of the event types: the four built-in ones and the registered ones, each
custom version's validator compiled once, kept equal to the database by polling its version."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from functools import cache
from typing import Any

import jsonschema_rs
import orjson

from app.audit.trail import Actor
from app.background import BackgroundLoop
from app.event_types.compatibility import Compatibility
from app.event_types.definition import EventTypeChanges, EventTypeDefinition, EventTypeView
from app.event_types.schemas import ENVELOPE_FIELDS, compile_validator
from app.event_types.store import EventTypeConflictError, EventTypeRecord, EventTypeStore
from event_models.models import MODEL_BY_TYPE

logger = logging.getLogger(__name__)


class RegisteredType:
    """A custom type with its schema versions; validators are compiled on first use and kept."""

    def __init__(self, record: EventTypeRecord) -> None:
        self.record = record
        self._validators: dict[int, jsonschema_rs.Draft202012Validator] = {}

    @property
    def name(self) -> str:
        return self.record.name

    def validator(self, version: int | None = None) -> jsonschema_rs.Draft202012Validator:
        number = version or self.record.version
        validator = self._validators.get(number)
        if validator is None:
            validator = self._validators[number] = compile_validator(self.record.schemas[number])
        return validator

    def view(self) -> EventTypeView:
        r = self.record
        return EventTypeView(
            name=r.name,
            description=r.description,
            owner=r.owner,
            schema=r.schemas[r.version],
            partition_key=r.partition_key,
            idempotency_fields=r.idempotency_fields,
            compatibility=r.compatibility,
            enabled=r.enabled,
            version=r.version,
            versions=sorted(r.schemas),
            builtin=False,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )


@cache
def builtin_views() -> dict[str, EventTypeView]:
    """The four built-in types, read-only, their schemas generated from their models."""
    views = {}
    for event_type, model in MODEL_BY_TYPE.items():
        schema: dict[str, Any] = model.model_json_schema()
        schema.pop("examples", None)  # whole events, envelope included: not instances of this schema
        schema["properties"] = {
            name: value for name, value in schema["properties"].items() if name not in ENVELOPE_FIELDS
        }
        schema["required"] = [name for name in schema.get("required", ()) if name not in ENVELOPE_FIELDS]
        views[event_type.value] = EventTypeView(
            name=event_type.value,
            description=(model.__doc__ or "").strip().splitlines()[0],
            owner="event-ingest",
            schema=schema,
            partition_key="user_id",
            idempotency_fields=["user_id", "client_attempt_id"] if event_type.value == "attempt" else None,
            compatibility=Compatibility.NONE,
            enabled=True,
            version=1,
            versions=[1],
            builtin=True,
            created_at=None,
            updated_at=None,
        )
    return views


class EventTypeRegistry:
    """The event types this worker serves; admin changes go through it to the store and apply here
    at once, other workers' changes within `interval`."""

    def __init__(self, store: EventTypeStore, interval: float) -> None:
        self.store = store
        self.version = 0
        self.types: Mapping[str, RegisteredType] = {}
        self._loop = BackgroundLoop("event-types-sync", self._poll, interval, delay_first=True, logger=logger)
        self.lock = asyncio.Lock()  # one admin change at a time in this worker
        self._listing: tuple[Mapping[str, RegisteredType], int, bytes] | None = None

    async def start(self) -> None:
        await self.reload()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def get(self, name: str) -> RegisteredType | None:
        return self.types.get(name)

    def listing_json(self) -> bytes:
        """`{"version": …, "event_types": [every view]}` as JSON, kept until the set changes: with
        thousands of types, building the views was most of what a list request (or a console
        page) cost, and the set changes rarely."""
        types, version, cached = self.types, self.version, self._listing
        if cached is not None and cached[0] is types and cached[1] == version:
            return cached[2]
        views = [*builtin_views().values(), *(t.view() for t in types.values())]
        body = orjson.dumps(
            {"version": version, "event_types": [v.model_dump(mode="json", by_alias=True) for v in views]}
        )
        self._listing = (types, version, body)
        return body

    def view(self, name: str) -> EventTypeView | None:
        builtin = builtin_views().get(name)
        if builtin is not None:
            return builtin
        registered = self.types.get(name)
        return registered.view() if registered is not None else None

    async def register(self, definition: EventTypeDefinition, actor: Actor) -> EventTypeView:
        async with self.lock:
            record = await asyncio.to_thread(self.store.register, definition, actor)
            await self.reload()
        return RegisteredType(record).view()

    async def register_new(self, definitions: list[EventTypeDefinition], actor: Actor) -> list[str]:
        """Register those of `definitions` whose names are free (each in its own transaction, as
        `register`), then reload once: seeding thousands of types must not reload the set per type.
        Returns the names registered."""
        async with self.lock:
            registered = await asyncio.to_thread(self._register_each, definitions, actor)
            await self.reload()
        return registered

    def _register_each(self, definitions: list[EventTypeDefinition], actor: Actor) -> list[str]:
        registered = []
        for definition in definitions:
            try:
                self.store.register(definition, actor)
                registered.append(definition.name)
            except EventTypeConflictError:  # another worker seeding at the same time got there first
                pass
        return registered

    async def add_version(self, name: str, schema: dict[str, Any], actor: Actor) -> EventTypeView:
        async with self.lock:
            record = await asyncio.to_thread(self.store.add_version, name, schema, actor)
            await self.reload()
        return RegisteredType(record).view()

    async def change(self, name: str, changes: EventTypeChanges, actor: Actor) -> EventTypeView:
        async with self.lock:
            record = await asyncio.to_thread(self.store.change, name, changes, actor)
            await self.reload()
        return RegisteredType(record).view()

    async def reload(self) -> None:
        version, records = await asyncio.to_thread(self.store.load)
        previous = self.types
        types = {}
        for record in records:
            known = previous.get(record.name)
            # Keep compiled validators when only the description, owner or switch changed.
            if known is not None and known.record.schemas.keys() == record.schemas.keys():
                known.record = record
                types[record.name] = known
            else:
                types[record.name] = RegisteredType(record)
        self.types = types  # one assignment: requests see the old set or the new one
        self.version = version

    async def _poll(self) -> None:
        if await asyncio.to_thread(self.store.version) != self.version:
            await self.reload()
            logger.info("event types reloaded", extra={"version": self.version})
