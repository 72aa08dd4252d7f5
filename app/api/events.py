"""`POST /v1/events/...`: one event per request, or a batch with one result per item."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.auth import AUTH_RESPONSES, caller
from app.api.batch_body import parse_batch
from app.api.errors import error_response
from app.api.ingest_options import INGEST_PARAMETERS, ingest_options
from app.api.json_body import parse_json
from app.api.request_body import BODY_RESPONSES, limited_body_route
from app.api.responses import JsonResponse
from app.api.schemas import BatchRequest, BatchResult, ErrorBody, EventAccepted
from app.config.settings import Settings
from app.event_types.events import validate_custom
from app.ingest.service import ItemOutcome, uuid_or_none
from app.runtime import Runtime
from app.security.keys import ANONYMOUS, ApiKey
from event_models.models import ActivityEvent, AttemptEvent, BaseEvent, PlacementEvent, SessionEvent
from event_models.outcomes import EventStatus, FailureCode

STATUS_WORDS = tuple(status.value for status in EventStatus)  # plain str: the batch body's count keys

_FAILURE_STATUS = {
    FailureCode.QUEUE_FULL: 429,
    FailureCode.SPOOL_FULL: 503,
    FailureCode.SPOOL_UNAVAILABLE: 503,
    FailureCode.RECORD_REJECTED: 422,
    FailureCode.FORBIDDEN: 403,
    FailureCode.RATE_LIMITED: 429,
}

SINGLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": EventAccepted, "description": "`duplicate`: seen before; `event_id` is the first one's."},
    202: {
        "description": "`accepted`: Kafka acknowledged it in every topic listed; `spooled`: durable in the "
        "spool, the relay delivers it; `unrouted`: valid but no rule matched."
    },
    403: {"model": ErrorBody, "description": "The API key may not post this event type."},
    413: {"model": ErrorBody, "description": "Body larger than MAX_REQUEST_BYTES."},
    415: {"model": ErrorBody, "description": "Not `application/json`, or an unsupported Content-Encoding."},
    422: {
        "model": ErrorBody,
        "description": "Invalid event (`detail` names each bad field), or a record Kafka "
        "refuses (`record_rejected`, kept in the dead-letter topic).",
    },
    429: {
        "model": ErrorBody,
        "description": "Publisher queue full, or the API key's rate limit reached; retry after "
        "`Retry-After` seconds.",
    },
    503: {
        "model": ErrorBody,
        "description": "Neither Kafka nor the spool can take it, shutting down, or `overloaded` "
        "(MAX_CONCURRENT_REQUESTS requests in progress and MAX_QUEUED_REQUESTS waiting, or it "
        "waited REQUEST_QUEUE_TIMEOUT in vain); retry after `Retry-After`.",
    },
}


def answer_single(outcome: ItemOutcome) -> Response:
    if outcome.validation_errors is not None:
        return error_response(
            422, outcome.validation_errors, FailureCode.VALIDATION_ERROR.value, event_id=outcome.event_id
        )
    failure = outcome.failure
    if failure is None:
        body = {"event_id": outcome.event_id, "status": outcome.status, "topics": outcome.topics}
        return JsonResponse(body, status_code=200 if outcome.status == EventStatus.DUPLICATE else 202)
    extra: dict[str, Any] = {"dead_lettered": True} if failure.dead_lettered else {}
    return error_response(
        _FAILURE_STATUS[failure.code],
        failure.message,
        failure.code.value,
        retriable=failure.retriable,
        retry_after=failure.retry_after,
        event_id=outcome.event_id,
        **extra,
    )


def refusal(runtime: Runtime, key: ApiKey, client: tuple[str, int] | None, events: int) -> Response | None:
    """503 while shutting down; 429 when the caller's rate limit has no room for `events`.

    `client` is the ASGI scope's (host, port): callers without a key share a bucket per address.
    """
    if runtime.shutting_down:
        return error_response(503, "service is shutting down", "shutting_down", retriable=True, retry_after=1)
    bucket = key.id if key is not ANONYMOUS else f"address:{client[0] if client else '?'}"
    wait = runtime.rate_limiter.take(bucket, events, key.rate_limit)
    if wait:
        runtime.metrics.record_rejected("rate_limited", events)
        return error_response(
            429,
            f"rate limit exceeded for {key.name!r}; retry after the Retry-After seconds",
            FailureCode.RATE_LIMITED.value,
            retriable=True,
            retry_after=wait,
        )
    return None


async def _ingest_single(event: BaseEvent, request: Request) -> Response:
    runtime, ack, key, traceparent = ingest_options(request)
    started = request.scope.get("state", {}).get("validation_started_ns")
    if runtime.tracing.enabled and started is not None:  # FastAPI validated the body before calling us
        runtime.tracing.record(
            "validate", started, time.time_ns(), **{"event_ingest.event_type": event.event_type}
        )
    if not caller(request).may_post(event.event_type):
        runtime.metrics.record_rejected("forbidden")
        return error_response(
            403, f"this API key may not post {event.event_type} events", FailureCode.FORBIDDEN.value
        )
    refused = refusal(runtime, caller(request), request.scope.get("client"), 1)
    if refused is not None:
        return refused
    outcome = await runtime.ingest.ingest_one(event, key, traceparent, ack)
    return answer_single(outcome)


def events_router(settings: Settings) -> APIRouter:
    """The ingest routes, with request bodies limited to MAX_REQUEST_BYTES."""
    drop_unknown = settings.unknown_fields == "ignore"
    router = APIRouter(
        prefix="/v1/events",
        tags=["events"],
        route_class=limited_body_route(
            settings.max_request_bytes, drop_unknown_fields=drop_unknown, direct=True
        ),
        responses={**AUTH_RESPONSES, **BODY_RESPONSES},
    )
    max_batch = settings.max_batch_events
    single_route: dict[str, Any] = {
        "status_code": 202,
        "response_model": EventAccepted,
        "responses": SINGLE_RESPONSES,
        "openapi_extra": {"parameters": INGEST_PARAMETERS},
    }

    @router.post("/attempts", **single_route)
    async def ingest_attempt(
        event: AttemptEvent,
        request: Request,
    ) -> Response:
        """A learner answered an item. Routed to the attempts topic, and to ML training when quality ≥ 4.
        A repeated `client_attempt_id` (same user) is answered `duplicate`."""
        return await _ingest_single(event, request)

    @router.post("/sessions", **single_route)
    async def ingest_session(
        event: SessionEvent,
        request: Request,
    ) -> Response:
        """A study session changed state. Routed to the sessions topic when items_attempted > 0."""
        return await _ingest_single(event, request)

    @router.post("/placements", **single_route)
    async def ingest_placement(
        event: PlacementEvent,
        request: Request,
    ) -> Response:
        """A placement test changed state. Completed tests go to placements and ML training."""
        return await _ingest_single(event, request)

    @router.post("/activities", **single_route)
    async def ingest_activity(
        event: ActivityEvent,
        request: Request,
    ) -> Response:
        """Any other learner activity. Routed to the activities topic."""
        return await _ingest_single(event, request)

    @router.post(
        "/batch",
        status_code=202,
        response_model=BatchResult,
        responses={
            202: {"description": "Every item accepted, spooled, unrouted or duplicate."},
            207: {"model": BatchResult, "description": "Some items rejected: see each item's `errors`."},
            413: {"model": ErrorBody, "description": "More than MAX_BATCH_EVENTS items, or body too large."},
            422: {"model": ErrorBody, "description": 'The body is not a batch envelope `{"events": [...]}`.'},
            429: {"model": ErrorBody, "description": "Rate limit reached; retry after `Retry-After`."},
            503: {
                "model": ErrorBody,
                "description": "Shutting down, or `overloaded` (MAX_CONCURRENT_REQUESTS requests in "
                "progress and MAX_QUEUED_REQUESTS waiting, or it waited REQUEST_QUEUE_TIMEOUT in vain); "
                "retry after `Retry-After`.",
            },
        },
        openapi_extra={
            "parameters": INGEST_PARAMETERS,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": BatchRequest.model_json_schema()}},
            },
        },
    )
    async def ingest_batch(request: Request) -> Response:
        """Many events of any type. Valid items are published even when others are not; order is kept.
        With an `Idempotency-Key`, a retried batch gets the first answer for items already taken."""
        runtime, ack, idempotency_key, traceparent = ingest_options(request)
        # The body is parsed here rather than by FastAPI: an all-valid batch is parsed and
        # validated from bytes in one pydantic-core call, several times faster than item by item.
        raw = await request.body()
        with runtime.tracing.span("validate", **{"event_ingest.batch_bytes": len(raw)}):
            items = parse_batch(raw, max_batch, drop_unknown_fields=drop_unknown)
        refused = refusal(runtime, caller(request), request.scope.get("client"), len(items))
        if refused is not None:
            return refused
        outcomes = await runtime.ingest.ingest_batch(
            items,
            idempotency_key,
            traceparent,
            ack,
            None if caller(request).event_types is None else caller(request).may_post,
        )
        body = _batch_body(outcomes)
        retry_after = [o.failure.retry_after for o in outcomes if o.failure and o.failure.retry_after]
        headers = {"Retry-After": str(max(1, round(max(retry_after))))} if retry_after else None
        status = 207 if body["rejected"] else 202
        return JsonResponse(body, status_code=status, headers=headers)

    @router.post(
        "/{name}",
        **{
            **single_route,
            "responses": {
                **SINGLE_RESPONSES,
                404: {"model": ErrorBody, "description": "No event type of this name is registered."},
                410: {"model": ErrorBody, "description": "The event type is disabled."},
            },
            "openapi_extra": {
                "parameters": INGEST_PARAMETERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"type": "object"}, "example": CUSTOM_EXAMPLE}
                    },
                },
            },
        },
    )
    async def ingest_custom(name: str, request: Request) -> Response:
        """An event of a registered type (`GET /v1/event-types` lists them with their schemas): the
        envelope (`user_id`, `occurred_at`, ...) and the type's own fields, checked against the schema
        version the event names in `schema_version` (default: the latest)."""
        runtime = request.app.state.runtime
        registered = runtime.event_types.get(name)
        if registered is None:
            return error_response(404, f"no event type {name!r} is registered", "unknown_event_type")
        if not registered.record.enabled:
            return error_response(410, f"event type {name} is disabled", "event_type_disabled")
        try:
            body = parse_json(await request.body())
        except json.JSONDecodeError as exc:
            problem = {"field": "(body)", "message": f"JSON decode error: {exc}", "type": "json_invalid"}
            return error_response(422, [problem], FailureCode.VALIDATION_ERROR.value)
        event, errors = validate_custom(registered, body)
        if event is None:
            runtime.metrics.record_rejected("validation")
            event_id = body.get("event_id") if isinstance(body, dict) else None
            return error_response(
                422, errors, FailureCode.VALIDATION_ERROR.value, event_id=uuid_or_none(event_id)
            )
        return await _ingest_single(event, request)

    return router


CUSTOM_EXAMPLE = {
    "user_id": "user-42",
    "occurred_at": "2026-11-24T10:15:00Z",
    "workflow_id": "wf-7",
    "task_id": "extract",
    "duration_ms": 5230,
}


def _batch_body(outcomes: list[ItemOutcome]) -> dict[str, Any]:
    """The BatchResult body, built as plain data (this runs once per item of every batch)."""
    counts = dict.fromkeys(STATUS_WORDS, 0)
    results = []
    for index, outcome in enumerate(outcomes):
        counts[outcome.status] += 1
        item: dict[str, Any] = {"index": index, "status": outcome.status, "topics": outcome.topics}
        if outcome.event_id is not None:
            item["event_id"] = outcome.event_id
        if outcome.validation_errors is not None:
            item["errors"] = [
                {
                    "code": FailureCode.VALIDATION_ERROR.value,
                    "message": error["message"],
                    "retriable": False,
                    "field": error["field"],
                }
                for error in outcome.validation_errors
            ]
            item["status_code"] = 422
        elif outcome.failure is not None:
            failure = outcome.failure
            item["errors"] = [
                {"code": failure.code.value, "message": failure.message, "retriable": failure.retriable}
            ]
            item["status_code"] = _FAILURE_STATUS[failure.code]
        results.append(item)
    return {**counts, "results": results}
