"""Validation errors as clients read them: the field's dotted path, a message, the error type."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

_EVENT_TAGS = {"attempt", "session", "placement", "activity"}


def field_path(location: Sequence[int | str], *, strip_tag: bool = False) -> str:
    """`("body", "metadata", "k")` → `metadata.k`; list positions render as `[3]`."""
    parts = list(location)
    if parts and parts[0] in {"body", "query", "header", "path"}:
        parts = parts[1:]
    if strip_tag and parts and parts[0] in _EVENT_TAGS:
        parts = parts[1:]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


def describe_errors(errors: Iterable[Any], *, strip_tag: bool = False) -> list[dict[str, Any]]:
    """Pydantic errors as `{field, message, type}`; the offending input is not echoed back."""
    described = []
    for error in errors:
        kind = error.get("type", "value_error")
        field = field_path(error.get("loc", ()), strip_tag=strip_tag)
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if kind in {"union_tag_invalid", "union_tag_not_found"}:
            # pydantic's wording speaks of tags and discriminators; say what the client must send.
            field, message = "event_type", f"event_type must be one of {', '.join(sorted(_EVENT_TAGS))}"
        described.append({"field": field, "message": message, "type": kind})
    return described
