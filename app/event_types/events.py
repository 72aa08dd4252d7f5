"""Events of custom types: the envelope checked by the service's own model, the rest by the type's
JSON Schema (the version the event names in `schema_version`, else the latest)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import PrivateAttr, ValidationError

from app.event_types.registry import RegisteredType
from app.event_types.schemas import describe_schema_errors
from app.events.validation import describe_errors
from event_models.models import RegisteredTypeEvent


class CustomEvent(RegisteredTypeEvent):
    """An event of a registered type, as the service handles it: keyed and identified as its type says."""

    _partition_key: str = PrivateAttr("user_id")
    _identity_fields: tuple[str, ...] = PrivateAttr(())

    def field_value(self, path: str) -> Any:
        head = path.partition(".")[0]
        if head in self.fields:
            value: Any = self.fields
            for part in path.split("."):
                if not isinstance(value, dict) or part not in value:
                    raise KeyError(path)
                value = value[part]
            return value
        return super().field_value(path)

    def kafka_key(self) -> str:
        """The type's `partition_key` field (the user id when the event lacks it)."""
        name = self._partition_key
        value = self.fields.get(name) if name in self.fields else getattr(self, name, None)
        return self.user_id if value is None else _text(value)

    def identity(self) -> str | None:
        """The type's `idempotency_fields` as one key; None when the type has none or one is absent."""
        if not self._identity_fields:
            return None
        values: list[Any] = [self.event_type]
        for name in self._identity_fields:
            value = self.fields.get(name) if name in self.fields else getattr(self, name, None)
            if value is None:
                return None
            values.append(value)
        return orjson.dumps(values).decode()  # a JSON list: no separator a value could contain


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


# The envelope's field names, once: `model_fields` is a property that builds its answer per call.
_ENVELOPE = frozenset(CustomEvent.__pydantic_fields__)


def validate_custom(
    registered: RegisteredType, body: Any
) -> tuple[CustomEvent | None, list[dict[str, Any]] | None]:
    """The event, or the errors it gets (envelope and schema together, each naming its field)."""
    if not isinstance(body, dict):
        return None, [{"field": "(body)", "message": "an event must be a JSON object", "type": "type"}]
    record = registered.record
    version = body.get("schema_version", record.version)
    errors: list[dict[str, Any]] = []
    if version not in record.schemas:
        known = ", ".join(str(n) for n in sorted(record.schemas))
        errors.append(
            {
                "field": "schema_version",
                "message": f"{record.name} has schema version(s) {known}",
                "type": "schema_version",
            }
        )
        version = record.version
    event: CustomEvent | None = None
    try:
        event = CustomEvent.model_validate({**body, "event_type": record.name, "schema_version": version})
    except ValidationError as exc:
        errors += [e for e in describe_errors(exc.errors()) if e["type"] != "extra_forbidden"]
    own = {key: value for key, value in body.items() if key not in _ENVELOPE}
    errors += describe_schema_errors(registered.validator(version), own) or []
    if errors or event is None:
        return None, errors
    event._partition_key = record.partition_key
    event._identity_fields = tuple(record.idempotency_fields or ())
    return event, None
