"""Input records: decoded from the service's JSON or Protocol Buffers, checked, reduced to the fields
the aggregates use. A record that cannot be used becomes a `Bad` carrying its bytes and a reason, so
the pipeline sends it to the dead-letter topic instead of stopping."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from app.serialization.generated import events_pb2

# Event times outside these bounds are impossible for a learning event (a clock or a bug, not a learner).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK_MS = 24 * 3600 * 1000

Headers = list[tuple[str, bytes]] | None


@dataclass(frozen=True, slots=True)
class Bad:
    """A record the aggregates cannot use."""

    reason: str
    raw: bytes


def header(headers: Headers, name: str) -> str | None:
    for key, value in headers or []:
        if key == name:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def decode(raw: bytes, headers: Headers) -> dict[str, Any]:
    """The event as a flat dict, from the service's JSON or (by its content_type header) protobuf."""
    content_type = header(headers, "content_type") or "application/json"
    if content_type.startswith("application/x-protobuf"):
        try:
            message = events_pb2.Event.FromString(raw)
        except DecodeError as exc:
            raise ValueError(f"not an event_ingest.v1.Event: {exc}") from None
        event = json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        payload = message.WhichOneof("payload")
        if payload is not None:
            event.update(event.pop(payload))
        return event
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise ValueError(f"not a JSON object but {type(event).__name__}")
    return event


def event_time_ms(event: dict[str, Any], field: str = "occurred_at", now_ms: int | None = None) -> int:
    """`field` as milliseconds since the epoch; impossible times are refused."""
    text = event.get(field)
    if not isinstance(text, str):
        raise ValueError(f"{field} is missing or not a string")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field} {text[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{field} {text[:40]!r} has no time zone")
    ms = int(moment.timestamp() * 1000)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    if moment < EARLIEST or ms > now_ms + FUTURE_SLACK_MS:
        raise ValueError(f"{field} {text[:40]!r} is impossible (before 2000 or more than a day ahead)")
    return ms


def _text(event: dict[str, Any], field: str) -> str:
    value = event.get(field)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} is missing or not a string")
    return value


def _int(event: dict[str, Any], field: str, low: int, high: int, required: bool = True) -> int | None:
    value = event.get(field)
    if value is None and not required:
        return None
    if isinstance(value, str) and value.isdigit():  # protobuf's JSON form writes 64-bit integers as text
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{field} is missing or not an integer {low}-{high}")
    return value


def attempt(raw: bytes, headers: Headers) -> dict[str, Any] | Bad:
    """What the learner and item windows need of an attempt, or why it cannot be used."""
    try:
        event = decode(raw, headers)
        correct = event.get("correct")
        if not isinstance(correct, bool):
            raise ValueError("correct is missing or not a boolean")
        return {
            "ts": event_time_ms(event),
            "event_id": str(event.get("event_id", "")),
            "user_id": _text(event, "user_id"),
            "item_id": _text(event, "item_id"),
            "correct": correct,
            "time_taken_ms": _int(event, "time_taken_ms", 0, 86_400_000),
            "quality": _int(event, "quality", 0, 5),
            "hints_used": _int(event, "hints_used", 0, 1000, required=False) or 0,
        }
    except ValueError as exc:
        return Bad(str(exc), raw)


SESSION_STATUSES = frozenset({"started", "completed", "abandoned"})


def session(raw: bytes, headers: Headers) -> dict[str, Any] | Bad:
    """What the sessions-per-day aggregate needs of a session event, or why it cannot be used."""
    try:
        event = decode(raw, headers)
        status = str(event.get("status", "started")).lower().removeprefix("status_")
        if status not in SESSION_STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(sorted(SESSION_STATUSES))}")
        seconds = 0.0
        if event.get("started_at") and event.get("ended_at"):
            started, ended = event_time_ms(event, "started_at"), event_time_ms(event, "ended_at")
            if ended < started:
                raise ValueError("ended_at is before started_at")
            seconds = (ended - started) / 1000
        return {
            "ts": event_time_ms(event),
            "event_id": str(event.get("event_id", "")),
            "user_id": _text(event, "user_id"),
            "session_id": _text(event, "session_id"),
            "status": status,
            "seconds": seconds,
        }
    except ValueError as exc:
        return Bad(str(exc), raw)
