"""Schema evolution under each compatibility mode, with Confluent Schema Registry's meaning."""

from __future__ import annotations

from typing import Any

import pytest

from app.event_types.compatibility import Compatibility, incompatibilities, unknown_keywords

BACKWARD, FORWARD, FULL = Compatibility.BACKWARD, Compatibility.FORWARD, Compatibility.FULL

BASE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "task_id": {"type": "string", "maxLength": 64},
        "state": {"enum": ["ok", "failed"]},
        "retries": {"type": "integer", "minimum": 0},
    },
    "required": ["task_id"],
    "additionalProperties": False,
}


def _with(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


def _properties(**changes: Any) -> dict[str, Any]:
    return _with(properties={**BASE["properties"], **changes})


def test_an_unchanged_schema_is_compatible_in_every_mode() -> None:
    for mode in Compatibility:
        assert incompatibilities(BASE, BASE, mode) == []


def test_a_required_field_added_without_a_default_breaks_backward() -> None:
    new = _with(
        properties={**BASE["properties"], "duration_ms": {"type": "integer"}},
        required=["task_id", "duration_ms"],
    )
    assert incompatibilities(BASE, new, BACKWARD) == ["required field `duration_ms` added without a default"]
    open_old = {k: v for k, v in BASE.items() if k != "additionalProperties"}
    open_new = {k: v for k, v in new.items() if k != "additionalProperties"}
    assert incompatibilities(open_old, open_new, FORWARD) == []  # old readers ignore the extra field
    with_default = _with(
        properties={**BASE["properties"], "duration_ms": {"type": "integer", "default": 0}},
        required=["task_id", "duration_ms"],
    )
    assert incompatibilities(BASE, with_default, BACKWARD) == []


def test_an_optional_field_added_to_a_closed_schema_is_backward_but_not_forward() -> None:
    new = _properties(note={"type": "string"})
    assert incompatibilities(BASE, new, BACKWARD) == []
    assert incompatibilities(BASE, new, FORWARD) == [
        "field `note` added while the old schema refuses extra fields"
    ]
    assert incompatibilities(BASE, new, FULL) == incompatibilities(BASE, new, FORWARD)


def test_a_field_removed_from_a_closed_schema_breaks_backward() -> None:
    new = _with(properties={k: v for k, v in BASE["properties"].items() if k != "retries"})
    assert incompatibilities(BASE, new, BACKWARD) == [
        "field `retries` removed while extra fields are refused"
    ]
    assert incompatibilities(BASE, new, FORWARD) == []


def test_adding_a_constrained_field_to_an_open_schema_breaks_backward() -> None:
    old = {k: v for k, v in BASE.items() if k != "additionalProperties"}
    new = {**old, "properties": {**old["properties"], "note": {"type": "string"}}}
    assert incompatibilities(old, new, BACKWARD) == [
        "field `note` added while the old schema allowed any extra field"
    ]


def test_types_narrowed_and_widened() -> None:
    to_number = _properties(retries={"type": "number", "minimum": 0})
    assert incompatibilities(BASE, to_number, BACKWARD) == []  # every integer is a number
    assert incompatibilities(BASE, to_number, FORWARD) == ["`retries`: type changed from integer to number"]
    to_string = _properties(retries={"type": "string"})
    assert "`retries`: type changed from integer to string" in incompatibilities(BASE, to_string, BACKWARD)


def test_enum_values_added_and_removed() -> None:
    more = _properties(state={"enum": ["ok", "failed", "skipped"]})
    assert incompatibilities(BASE, more, BACKWARD) == []
    assert incompatibilities(BASE, more, FORWARD) == ['`state`: allowed value(s) ["skipped"] added']
    fewer = _properties(state={"enum": ["ok"]})
    assert incompatibilities(BASE, fewer, BACKWARD) == ['`state`: allowed value(s) ["failed"] removed']


def test_bounds_tightened_and_loosened() -> None:
    tighter = _properties(task_id={"type": "string", "maxLength": 32})
    assert incompatibilities(BASE, tighter, BACKWARD) == ["`task_id`: maxLength changed from 64 to 32"]
    assert incompatibilities(BASE, tighter, FORWARD) == []
    bounded = _properties(retries={"type": "integer", "minimum": 0, "maximum": 10})
    assert incompatibilities(BASE, bounded, BACKWARD) == ["`retries`: maximum changed from none to 10"]
    pattern = _properties(task_id={"type": "string", "maxLength": 64, "pattern": "^t-"})
    assert incompatibilities(BASE, pattern, BACKWARD) == ["`task_id`: pattern changed from none to ^t-"]


def test_arrays_and_alternatives() -> None:
    old = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}
    new = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "integer"}}}}
    assert incompatibilities(old, new, BACKWARD) == ["`tags.items`: type changed from string to integer"]
    either = {"type": "object", "properties": {"id": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}
    only_string = {"type": "object", "properties": {"id": {"type": "string"}}}
    assert incompatibilities(only_string, either, BACKWARD) == []
    assert incompatibilities(only_string, either, FORWARD) != []


def test_full_reports_both_directions() -> None:
    new = _with(
        properties={**BASE["properties"], "duration_ms": {"type": "integer"}},
        required=["task_id", "duration_ms"],
    )
    problems = incompatibilities(BASE, new, FULL)
    assert "required field `duration_ms` added without a default" in problems
    assert "field `duration_ms` added while the old schema refuses extra fields" in problems


@pytest.mark.parametrize(
    ("schema", "found"),
    [
        (BASE, []),
        ({"type": "object", "allOf": [{"type": "object"}]}, ["/allOf"]),
        ({"properties": {"a": {"not": {"type": "string"}}}}, ["/properties/a/not"]),
        ({"description": "annotations are fine", "title": "t", "examples": [{}]}, []),
    ],
)
def test_keywords_outside_the_checker_are_named(schema: dict[str, Any], found: list[str]) -> None:
    assert unknown_keywords(schema) == found
