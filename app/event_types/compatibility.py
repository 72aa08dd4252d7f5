"""Schema evolution checks for event types, with Confluent Schema Registry's meaning of the modes.

- `backward`: consumers on the new schema read data written with the old one, so every event the
  old schema accepts must be accepted by the new one (old ⊆ new);
- `forward`: consumers still on the old schema read data written with the new one (new ⊆ old);
- `full`: both; `none`: no check.

The check is structural, over the subset of JSON Schema in `UNDERSTOOD` (plus annotations such as
`description`, which change nothing): a schema using any other keyword can only be registered with
`compatibility: none`. It is conservative: when it cannot prove a change safe it names it, one
message per incompatibility, phrased as the change from the old schema to the new one.

(jsoncompat, the library that does this kind of proof, answers only true or false and calls itself
alpha; operators need each incompatibility named, so the checker is ours.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any

import orjson

Schema = Mapping[str, Any] | bool


class Compatibility(StrEnum):
    NONE = "none"
    BACKWARD = "backward"
    FORWARD = "forward"
    FULL = "full"


UNDERSTOOD = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "enum", "const",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
        "minLength", "maxLength", "pattern", "format",
        "items", "minItems", "maxItems", "uniqueItems",
        "oneOf", "anyOf", "minProperties", "maxProperties",
    }
)  # fmt: skip
ANNOTATIONS = frozenset(
    {
        "$schema", "$id", "$comment", "title", "description", "default", "examples",
        "deprecated", "readOnly", "writeOnly", "contentMediaType", "contentEncoding",
    }
)  # fmt: skip
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_TYPES = ("null", "boolean", "object", "array", "string", "number", "integer")


def unknown_keywords(schema: Schema, path: str = "") -> list[str]:
    """Keywords outside what the checker understands, as JSON pointers into the schema."""
    if isinstance(schema, bool):
        return []
    found = [f"{path}/{key}" for key in schema if key not in UNDERSTOOD and key not in ANNOTATIONS]
    for key, sub in _subschemas(schema):
        found += unknown_keywords(sub, f"{path}/{key}")
    return found


def _subschemas(schema: Mapping[str, Any]) -> Iterator[tuple[str, Schema]]:
    for name, sub in (schema.get("properties") or {}).items():
        yield f"properties/{name}", sub
    for key in ("additionalProperties", "items"):
        if isinstance(schema.get(key), Mapping | bool):
            yield key, schema[key]
    for key in ("oneOf", "anyOf"):
        for index, sub in enumerate(schema.get(key) or ()):
            yield f"{key}/{index}", sub


def incompatibilities(old: Schema, new: Schema, mode: Compatibility) -> list[str]:
    """Every way `new` breaks `mode` against `old` (empty: compatible)."""
    problems: list[str] = []
    if mode in (Compatibility.BACKWARD, Compatibility.FULL):
        problems += _Check(narrow_is_old=True).subset(old, new, "")
    if mode in (Compatibility.FORWARD, Compatibility.FULL):
        problems += _Check(narrow_is_old=False).subset(new, old, "")
    return list(dict.fromkeys(problems))


@dataclass(frozen=True)
class _Check:
    """Proves `narrow ⊆ wide` (every instance `narrow` accepts, `wide` accepts too), naming what
    stops it. Which of the two is the old schema only decides how a message is phrased."""

    narrow_is_old: bool

    def _changed(self, where: str, what: str, narrow: Any, wide: Any) -> str:
        old, new = (narrow, wide) if self.narrow_is_old else (wide, narrow)
        return f"{_at(where)}{what} changed from {_show(old)} to {_show(new)}"

    def subset(self, narrow: Schema, wide: Schema, where: str) -> list[str]:
        if wide is True or wide == {}:
            return []
        if narrow is False:
            return []
        if wide is False:
            return [self._changed(where, "schema", narrow, wide)]
        if narrow is True:
            narrow = {}
        if isinstance(narrow, bool) or isinstance(wide, bool):  # (handled above; for the type checker)
            return []
        if "anyOf" in narrow or "oneOf" in narrow:
            branches = list(narrow.get("anyOf", ())) + list(narrow.get("oneOf", ()))
            rest = {k: v for k, v in narrow.items() if k not in ("anyOf", "oneOf")}
            return [p for branch in branches for p in self.subset(_merge(rest, branch), wide, where)]
        if "anyOf" in wide or "oneOf" in wide:
            branches = list(wide.get("anyOf", ())) + list(wide.get("oneOf", ()))
            rest = {k: v for k, v in wide.items() if k not in ("anyOf", "oneOf")}
            outer = self.subset(narrow, rest, where) if rest else []
            if any(not self.subset(narrow, branch, where) for branch in branches):
                return outer
            return [*outer, self._changed(where, "the alternatives (anyOf/oneOf)", narrow, wide)]
        problems = self._types(narrow, wide, where)
        problems += self._values(narrow, wide, where)
        problems += self._bounds(narrow, wide, where)
        problems += self._strings(narrow, wide, where)
        problems += self._objects(narrow, wide, where)
        problems += self._arrays(narrow, wide, where)
        return problems

    def _types(self, narrow: Mapping[str, Any], wide: Mapping[str, Any], where: str) -> list[str]:
        if "type" not in wide:
            return []
        wide_types = _type_set(wide)
        narrow_types = _type_set(narrow) if "type" in narrow else set(_TYPES)
        if "enum" in narrow or "const" in narrow:
            narrow_types = {_type_of(value) for value in _allowed_values(narrow)}
        missing = {
            t for t in narrow_types if t not in wide_types and not (t == "integer" and "number" in wide_types)
        }
        if missing:
            return [self._changed(where, "type", narrow.get("type", "any"), wide["type"])]
        return []

    def _values(self, narrow: Mapping[str, Any], wide: Mapping[str, Any], where: str) -> list[str]:
        if "enum" not in wide and "const" not in wide:
            return []
        wide_values = _allowed_values(wide)
        if "enum" not in narrow and "const" not in narrow:
            return [self._changed(where, "allowed values", "any", wide_values)]
        lost = [value for value in _allowed_values(narrow) if value not in wide_values]
        if lost:
            verb = "removed" if self.narrow_is_old else "added"
            return [f"{_at(where)}allowed value(s) {_show(lost)} {verb}"]
        return []

    def _bounds(self, narrow: Mapping[str, Any], wide: Mapping[str, Any], where: str) -> list[str]:
        problems = []
        for key in _LOWER_BOUNDS + _UPPER_BOUNDS:
            if key not in wide:
                continue
            looser = key in narrow and (
                wide[key] <= narrow[key] if key in _LOWER_BOUNDS else wide[key] >= narrow[key]
            )
            if not looser:
                problems.append(self._changed(where, key, narrow.get(key, "none"), wide[key]))
        if "multipleOf" in wide:
            step = narrow.get("multipleOf")
            if step is None or Fraction(str(step)) % Fraction(str(wide["multipleOf"])) != 0:
                problems.append(self._changed(where, "multipleOf", step or "none", wide["multipleOf"]))
        return problems

    def _strings(self, narrow: Mapping[str, Any], wide: Mapping[str, Any], where: str) -> list[str]:
        problems = []
        for key in ("pattern", "format"):
            if key in wide and narrow.get(key) != wide[key]:
                problems.append(self._changed(where, key, narrow.get(key, "none"), wide[key]))
        return problems

    def _objects(self, narrow: Mapping[str, Any], wide: Mapping[str, Any], where: str) -> list[str]:
        problems = []
        narrow_properties: Mapping[str, Schema] = narrow.get("properties") or {}
        wide_properties: Mapping[str, Schema] = wide.get("properties") or {}
        narrow_rest: Schema = narrow.get("additionalProperties", True)
        wide_rest: Schema = wide.get("additionalProperties", True)
        for name, wide_property in wide_properties.items():
            inner = f"{where}/{name}"
            if name in narrow_properties:
                problems += self.subset(narrow_properties[name], wide_property, inner)
            elif self.subset(narrow_rest, wide_property, inner):
                # `narrow` lets `name` through with any value (open content), `wide` constrains it.
                if self.narrow_is_old:
                    problems.append(
                        f"field `{_field(inner)}` added while the old schema allowed any extra field"
                    )
                else:
                    problems.append(f"field `{_field(inner)}` removed: the old schema constrains it")
        for name, narrow_property in narrow_properties.items():
            if name not in wide_properties:
                inner = f"{where}/{name}"
                if self.subset(narrow_property, wide_rest, inner):
                    if self.narrow_is_old:
                        problems.append(f"field `{_field(inner)}` removed while extra fields are refused")
                    else:
                        problems.append(
                            f"field `{_field(inner)}` added while the old schema refuses extra fields"
                        )
        if narrow_rest is not False and self.subset(narrow_rest, wide_rest, where):
            # Extra fields `narrow` lets through, `wide` refuses or constrains.
            before = narrow.get("additionalProperties", "any")
            problems.append(self._changed(where, "additionalProperties", before, wide_rest))
        narrow_required = set(narrow.get("required") or ())
        for name in wide.get("required") or ():
            if name in narrow_required:
                continue
            inner = f"{where}/{name}"
            if self.narrow_is_old:
                added = wide_properties.get(name)
                if not (isinstance(added, Mapping) and "default" in added):
                    problems.append(f"required field `{_field(inner)}` added without a default")
            else:
                problems.append(f"field `{_field(inner)}` no longer required (old readers require it)")
        return problems

    def _arrays(self, narrow: Mapping[str, Any], wide: Mapping[str, Any], where: str) -> list[str]:
        problems = []
        if wide.get("uniqueItems") is True and narrow.get("uniqueItems") is not True:
            problems.append(self._changed(where, "uniqueItems", narrow.get("uniqueItems", False), True))
        if "items" in wide:
            problems += self.subset(narrow.get("items", True), wide["items"], f"{where}/items")
        return problems


def _merge(base: Mapping[str, Any], branch: Schema) -> Schema:
    if isinstance(branch, bool) or not base:
        return branch
    return {**base, **branch}


def _type_set(schema: Mapping[str, Any]) -> set[str]:
    declared = schema["type"]
    return {declared} if isinstance(declared, str) else set(declared)


def _allowed_values(schema: Mapping[str, Any]) -> list[Any]:
    return [schema["const"]] if "const" in schema else list(schema["enum"])


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _field(pointer: str) -> str:
    return pointer.strip("/").replace("/", ".")


def _at(where: str) -> str:
    return f"`{_field(where)}`: " if where else ""


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
