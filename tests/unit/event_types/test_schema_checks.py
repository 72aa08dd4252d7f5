"""Hostile and mistaken schemas are refused at registration with a clear reason; good ones compile."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.event_types.compatibility import Compatibility
from app.event_types.schemas import (
    MAX_SCHEMA_BYTES,
    SchemaRefusedError,
    check_schema,
    compile_validator,
    describe_schema_errors,
)

GOOD: dict[str, Any] = {
    "type": "object",
    "properties": {"task_id": {"type": "string", "pattern": "^t-[0-9]+$"}, "ms": {"type": "integer"}},
    "required": ["task_id"],
    "additionalProperties": False,
}


def _refused(schema: Any, compatibility: Compatibility = Compatibility.BACKWARD) -> str:
    with pytest.raises(SchemaRefusedError) as caught:
        check_schema(schema, compatibility)
    return str(caught.value)


def test_a_good_schema_is_accepted_and_validates_events() -> None:
    check_schema(GOOD, Compatibility.BACKWARD)
    validator = compile_validator(GOOD)
    assert describe_schema_errors(validator, {"task_id": "t-1", "ms": 5}) is None
    errors = describe_schema_errors(validator, {"task_id": "x", "ms": "5", "extra": 1})
    assert errors is not None
    assert {error["field"] for error in errors} == {"task_id", "ms", "(body)"}


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ([], "must be a JSON object"),
        ({"type": "objec"}, "not a valid JSON Schema at /type"),
        ({"type": "string"}, '"type": "object"'),
        (
            {"type": "object", "properties": {"user_id": {"type": "string"}}},
            "redefines envelope field(s) user_id",
        ),
        (
            {"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}},
            "only references within",
        ),
        ({"$id": "https://example.com/s", "type": "object"}, "only references within"),
        ({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}, "JSON Schema 2020-12"),
        (
            {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a)\\1"}}},
            "linear-time engine",
        ),
        ({"type": "object", "allOf": [{"required": ["a"]}]}, "register with compatibility none"),
    ],
)
def test_bad_schemas_are_refused_with_the_reason(schema: Any, reason: str) -> None:
    assert reason in _refused(schema)


def test_keywords_outside_the_checker_are_allowed_without_compatibility_checks() -> None:
    check_schema({"type": "object", "allOf": [{"required": ["a"]}]}, Compatibility.NONE)


def test_size_and_depth_are_bounded() -> None:
    big = {"type": "object", "description": "x" * MAX_SCHEMA_BYTES}
    assert "bytes of JSON" in _refused(big)
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(100):
        deep = {"type": "object", "properties": {"a": deep}}
    assert "nests deeper" in _refused(deep)


def test_a_pattern_that_backtracks_elsewhere_cannot_stall_a_worker() -> None:
    """`^(a+)+$` takes exponential time on a backtracking engine; here it is linear."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}
    check_schema(schema, Compatibility.BACKWARD)
    validator = compile_validator(schema)
    started = time.monotonic()
    errors = describe_schema_errors(validator, {"a": "a" * 100_000 + "!"})
    assert errors is not None
    assert time.monotonic() - started < 1.0  # a backtracking engine would not finish this year
