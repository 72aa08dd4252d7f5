"""Key and message templates: `{variable}` placeholders filled from the event.

Variables are `event_id`, `event_type`, `user_id`, `timestamp` (occurred_at, UTC), `received_at`,
any field of the event, and nested `metadata.<key>` / `properties.<key>`. A string that is exactly one
placeholder keeps the value's type (`"{quality}"` gives 5, not "5"); otherwise values are
substituted as text. Templates are checked when a rule is saved, so an unknown variable is an error
then, never when an event arrives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from event_models.models import MODEL_BY_TYPE, EventType

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)\}")
BUILTIN_NAMES = frozenset(kind.value for kind in EventType)
NESTED_FIELDS = frozenset({"metadata", "properties"})
ALIASES = {"timestamp": "occurred_at"}

Template = str | int | float | bool | None | list["Template"] | dict[str, "Template"]


def variables_of(template: Any) -> set[str]:
    """Every placeholder name used anywhere in a (nested) template."""
    if isinstance(template, str):
        return set(PLACEHOLDER.findall(template))
    if isinstance(template, dict):
        return set().union(*(variables_of(value) for value in template.values())) if template else set()
    if isinstance(template, list):
        return set().union(*(variables_of(value) for value in template)) if template else set()
    return set()


def known_variables(event_types: Iterable[EventType]) -> set[str]:
    """Names a template may use for events of these types."""
    names = {"timestamp"}
    for event_type in event_types:
        names |= set(MODEL_BY_TYPE[event_type].model_fields)
    return names


def unknown_variables(template: Any, event_types: Iterable[str]) -> list[str]:
    """Variables no event of these types has. A registered type's fields come from a schema that
    may gain fields later, so templates for registered types are not checked (a missing field
    renders as null, or as empty text inside a string)."""
    kinds = list(event_types)
    builtin = [EventType(kind) for kind in kinds if kind in BUILTIN_NAMES]
    if len(builtin) < len(kinds):
        return []
    allowed = known_variables(builtin)
    unknown = []
    for name in sorted(variables_of(template)):
        head, _, rest = name.partition(".")
        if head not in allowed or (rest and head not in NESTED_FIELDS):
            unknown.append(name)
    return unknown


def lookup(values: dict[str, Any], name: str) -> Any:
    """The value of `name` in the event's JSON form; None when absent."""
    head, _, rest = name.partition(".")
    value: Any = values.get(ALIASES.get(head, head))
    for part in rest.split(".") if rest else ():
        value = value.get(part) if isinstance(value, dict) else None
    return value


def render(template: Any, values: dict[str, Any]) -> Any:
    """Fill a template from the event's JSON form (`event.model_dump(mode="json")`)."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole:
            return lookup(values, whole.group(1))
        return PLACEHOLDER.sub(lambda match: _text(lookup(values, match.group(1))), template)
    if isinstance(template, dict):
        return {key: render(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, values) for value in template]
    return template


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
