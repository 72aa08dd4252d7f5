"""The ingest routes' query and header options (`ack`, `Idempotency-Key`, `traceparent`).

Declared as FastAPI parameters, these three and the Runtime dependency cost about a fifth of a
single event's CPU: FastAPI resolves and validates each one on every request. The ingest routes
read them here instead, in a few lookups, with the same validation (422 naming the parameter,
in the shape FastAPI gives) and the same OpenAPI description (`INGEST_PARAMETERS`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, get_args

from fastapi import Request
from fastapi.exceptions import RequestValidationError

from app.ingest.single_events import AckLevel
from app.observability.request_context import current_traceparent
from app.runtime import Runtime

ACK_LEVELS: tuple[str, ...] = get_args(AckLevel)
MAX_IDEMPOTENCY_KEY_LENGTH = 200

ACK_DESCRIPTION = (
    "`kafka`: answer once Kafka acknowledged (or the event was spooled because Kafka could not take it); "
    "`spool`: answer once the event is durable in the spool, the relay publishes it. Default: ACK_LEVEL."
)
IDEMPOTENCY_KEY_DESCRIPTION = (
    "Repeating a key within IDEMPOTENCY_WINDOW answers the first result and publishes nothing."
)
TRACEPARENT_DESCRIPTION = (
    "W3C trace context; copied into the Kafka record headers (a malformed value is ignored)."
)


def _parameter(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": False,
        "schema": {"anyOf": [schema, {"type": "null"}], "title": name, "description": description},
        "description": description,
    }


INGEST_PARAMETERS: list[dict[str, Any]] = [
    _parameter("ack", "query", {"enum": list(ACK_LEVELS), "type": "string"}, ACK_DESCRIPTION),
    _parameter(
        "Idempotency-Key",
        "header",
        {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH},
        IDEMPOTENCY_KEY_DESCRIPTION,
    ),
    _parameter("traceparent", "header", {"type": "string"}, TRACEPARENT_DESCRIPTION),
]


class IngestOptions(NamedTuple):
    runtime: Runtime
    ack: AckLevel
    idempotency_key: str | None
    traceparent: str | None


def ingest_options(request: Request) -> IngestOptions:
    """The options of an ingest request; RequestValidationError (422) for an invalid one."""
    runtime: Runtime = request.app.state.runtime
    errors: list[dict[str, Any]] = []
    ack = request.query_params.get("ack")
    if ack is not None and ack not in ACK_LEVELS:
        expected = " or ".join(repr(level) for level in ACK_LEVELS)
        errors.append(
            {"loc": ("query", "ack"), "msg": f"Input should be {expected}", "type": "literal_error"}
        )
    key = request.headers.get("idempotency-key")
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        errors.append(
            {
                "loc": ("header", "Idempotency-Key"),
                "msg": f"String should have at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
                "type": "string_too_long",
            }
        )
    if errors:
        raise RequestValidationError(errors)
    # RequestIdMiddleware has checked traceparent already: the W3C spec says to ignore a
    # malformed one rather than fail the request.
    return IngestOptions(
        runtime,
        ack or runtime.settings.ack_level,  # type: ignore[arg-type]  # checked against ACK_LEVELS
        key,
        current_traceparent.get(),
    )
