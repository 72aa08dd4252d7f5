"""A custom event type's JSON Schema: what is refused at registration, and the compiled validator.

Schemas come from API callers, so they are treated as hostile: bounded in size and depth, never
allowed to fetch anything (`$ref` only within the schema itself), and compiled with jsonschema-rs's
linear-time regular expressions (Rust's `regex` crate: no backtracking, so no `pattern` can stall a
worker; patterns that need backtracking, such as backreferences, are refused at registration).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema_rs
import orjson

from app.event_types.compatibility import Compatibility, unknown_keywords
from app.events.validation import field_path

MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32  # nested objects and arrays in the schema document itself
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# The envelope every event carries, checked by the service itself: a type's schema may not redefine it.
ENVELOPE_FIELDS = frozenset(
    {
        "event_type",
        "event_id",
        "user_id",
        "occurred_at",
        "metadata",
        "schema_version",
        "tenant_id",
        "course_id",
        "received_at",
    }
)


class SchemaRefusedError(ValueError):
    """The schema cannot be registered; `problems` says why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _no_fetching(uri: str) -> Any:
    raise ValueError(f"remote references are not fetched: {uri}")


def check_schema(schema: Any, compatibility: Compatibility) -> None:
    """Raise SchemaRefusedError unless `schema` can be registered with `compatibility`."""
    if not isinstance(schema, Mapping):
        raise SchemaRefusedError(["schema must be a JSON object"])
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise SchemaRefusedError([f"schema nests deeper than {MAX_SCHEMA_DEPTH} levels"])
    size = len(orjson.dumps(schema))
    if size > MAX_SCHEMA_BYTES:
        raise SchemaRefusedError([f"schema is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are allowed"])
    problems = []
    declared = schema.get("$schema")
    if declared is not None and str(declared).rstrip("#") != DRAFT_2020_12:
        problems.append(f"$schema must be {DRAFT_2020_12} (JSON Schema 2020-12), not {declared}")
    problems += [
        f"{where}: only references within the schema (#...) are allowed" for where in _remote_refs(schema)
    ]
    if problems:
        raise SchemaRefusedError(problems)  # before anything else reads the schema
    try:
        jsonschema_rs.meta.validate(dict(schema))
    except jsonschema_rs.ValidationError as exc:
        where = "/" + "/".join(str(part) for part in exc.instance_path)
        raise SchemaRefusedError([f"not a valid JSON Schema at {where}: {exc.message}"]) from None
    if schema.get("type") != "object":
        problems.append('schema must describe an object: "type": "object"')
    redefined = sorted(ENVELOPE_FIELDS & set(schema.get("properties") or {}))
    if redefined:
        problems.append(
            f"schema redefines envelope field(s) {', '.join(redefined)}: the service checks them itself"
        )
    if compatibility != Compatibility.NONE:
        outside = unknown_keywords(schema)
        if outside:
            problems.append(
                f"keyword(s) {', '.join(outside)} are outside what the compatibility check understands: "
                "register with compatibility none, or leave them out"
            )
    if problems:
        raise SchemaRefusedError(problems)
    try:
        compile_validator(schema)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc).splitlines()[0]
        not_regex = ' is not a "regex"'
        if message.endswith(not_regex):
            message = (
                f"pattern {message.removesuffix(not_regex)} is not a regular expression the "
                "linear-time engine runs (no backreferences or lookaround)"
            )
        raise SchemaRefusedError([f"schema does not compile: {message}"]) from None


def compile_validator(schema: Mapping[str, Any]) -> jsonschema_rs.Draft202012Validator:
    """The validator of one schema version; build it once and keep it."""
    return jsonschema_rs.Draft202012Validator(
        dict(schema),
        validate_formats=True,
        pattern_options=jsonschema_rs.RegexOptions(),
        retriever=_no_fetching,
    )


def describe_schema_errors(
    validator: jsonschema_rs.Draft202012Validator, fields: Mapping[str, Any]
) -> list[dict[str, Any]] | None:
    """The event's own fields' errors as `{field, message, type}` (None when valid)."""
    if validator.is_valid(fields):
        return None
    return [
        {
            "field": field_path(list(error.instance_path)),
            "message": error.message,
            "type": "schema",
        }
        for error in validator.iter_errors(fields)
    ]


def _remote_refs(schema: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            where = f"{path}/{key}"
            if key in ("$ref", "$dynamicRef", "$recursiveRef") and not str(value).startswith("#"):
                found.append(where)
            elif key == "$id" and isinstance(value, str) and "://" in value:
                found.append(where)  # a base URI makes every relative reference a remote one
            else:
                found += _remote_refs(value, where)
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found += _remote_refs(value, f"{path}/{index}")
    return found


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:  # breadth first: no recursion limit to hit on a hostile document
        depth += 1
        nested: list[Any] = []
        for item in level:
            if isinstance(item, Mapping):
                nested += [v for v in item.values() if isinstance(v, Mapping | list)]
            elif isinstance(item, list):
                nested += [v for v in item if isinstance(v, Mapping | list)]
        level = nested
        if depth > MAX_SCHEMA_DEPTH:
            break
    return depth
