"""`POST /v1/events/...`: one event per request, or a batch with one result per item."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from app.api.batch_body import parse_batch
from app.api.dependencies import RuntimeDep, TraceparentDep
from app.api.errors import error_response
from app.api.request_body import limited_body_route
from app.api.responses import JsonResponse
from app.api.schemas import BatchRequest, BatchResult, ErrorBody, EventAccepted
from app.config.settings import Settings
from app.events.models import ActivityEvent, AttemptEvent, BaseEvent, PlacementEvent, SessionEvent
from app.ingest.service import AckLevel, ItemOutcome
from app.publishing.publisher import FailureCode
from app.runtime import Runtime

_FAILURE_STATUS = {
    FailureCode.QUEUE_FULL: 429,
    FailureCode.SPOOL_FULL: 503,
    FailureCode.SPOOL_UNAVAILABLE: 503,
    FailureCode.RECORD_REJECTED: 422,
}

AckQuery = Annotated[
    AckLevel | None,
    Query(
        description="`kafka`: answer once Kafka acknowledged (or the event was spooled because Kafka could "
        "not take it); `spool`: answer once the event is durable in the spool, the relay publishes it. "
        "Default: ACK_LEVEL."
    ),
]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Repeating a key within IDEMPOTENCY_WINDOW answers the first result and publishes nothing.",
    ),
]

SINGLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": EventAccepted, "description": "`duplicate`: seen before; `event_id` is the first one's."},
    202: {
        "description": "`accepted`: Kafka acknowledged it in every topic listed; `spooled`: durable in the "
        "spool, the relay delivers it; `unrouted`: valid but no rule matched."
    },
    413: {"model": ErrorBody, "description": "Body larger than MAX_REQUEST_BYTES."},
    415: {"model": ErrorBody, "description": "Not `application/json`, or an unsupported Content-Encoding."},
    422: {
        "model": ErrorBody,
        "description": "Invalid event (`detail` names each bad field), or a record Kafka "
        "refuses (`record_rejected`, kept in the dead-letter topic).",
    },
    429: {"model": ErrorBody, "description": "Publisher queue full; retry after `Retry-After` seconds."},
    503: {
        "model": ErrorBody,
        "description": "Neither Kafka nor the spool can take it, or shutting down; retry after "
        "`Retry-After`.",
    },
}


def _answer_single(outcome: ItemOutcome) -> Response:
    failure = outcome.failure
    if failure is None:
        body = {"event_id": str(outcome.event_id), "status": outcome.status, "topics": outcome.topics}
        return JsonResponse(body, status_code=200 if outcome.status == "duplicate" else 202)
    extra = {"dead_lettered": True} if failure.dead_lettered else {}
    return error_response(
        _FAILURE_STATUS[failure.code],
        failure.message,
        failure.code.value,
        retriable=failure.retriable,
        retry_after=failure.retry_after,
        event_id=outcome.event_id,
        **extra,
    )


def _refuse_while_stopping(runtime: Runtime) -> Response | None:
    if runtime.shutting_down:
        return error_response(503, "service is shutting down", "shutting_down", retriable=True, retry_after=1)
    return None


async def _ingest_single(
    event: BaseEvent, runtime: Runtime, traceparent: str | None, ack: AckLevel | None, key: str | None
) -> Response:
    refused = _refuse_while_stopping(runtime)
    if refused is not None:
        return refused
    outcome = await runtime.ingest.ingest_one(event, key, traceparent, ack or runtime.settings.ack_level)
    return _answer_single(outcome)


def events_router(settings: Settings) -> APIRouter:
    """The ingest routes, with request bodies limited to MAX_REQUEST_BYTES."""
    router = APIRouter(
        prefix="/v1/events", tags=["events"], route_class=limited_body_route(settings.max_request_bytes)
    )
    max_batch = settings.max_batch_events

    @router.post("/attempts", status_code=202, response_model=EventAccepted, responses=SINGLE_RESPONSES)
    async def ingest_attempt(
        event: AttemptEvent,
        runtime: RuntimeDep,
        traceparent: TraceparentDep,
        ack: AckQuery = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response:
        """A learner answered an item. Routed to the attempts topic, and to ML training when quality ≥ 4.
        A repeated `client_attempt_id` (same user) is answered `duplicate`."""
        return await _ingest_single(event, runtime, traceparent, ack, idempotency_key)

    @router.post("/sessions", status_code=202, response_model=EventAccepted, responses=SINGLE_RESPONSES)
    async def ingest_session(
        event: SessionEvent,
        runtime: RuntimeDep,
        traceparent: TraceparentDep,
        ack: AckQuery = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response:
        """A study session changed state. Routed to the sessions topic when items_attempted > 0."""
        return await _ingest_single(event, runtime, traceparent, ack, idempotency_key)

    @router.post("/placements", status_code=202, response_model=EventAccepted, responses=SINGLE_RESPONSES)
    async def ingest_placement(
        event: PlacementEvent,
        runtime: RuntimeDep,
        traceparent: TraceparentDep,
        ack: AckQuery = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response:
        """A placement test changed state. Completed tests go to placements and ML training."""
        return await _ingest_single(event, runtime, traceparent, ack, idempotency_key)

    @router.post("/activities", status_code=202, response_model=EventAccepted, responses=SINGLE_RESPONSES)
    async def ingest_activity(
        event: ActivityEvent,
        runtime: RuntimeDep,
        traceparent: TraceparentDep,
        ack: AckQuery = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response:
        """Any other learner activity. Routed to the activities topic."""
        return await _ingest_single(event, runtime, traceparent, ack, idempotency_key)

    @router.post(
        "/batch",
        status_code=202,
        response_model=BatchResult,
        responses={
            202: {"description": "Every item accepted, spooled, unrouted or duplicate."},
            207: {"model": BatchResult, "description": "Some items rejected: see each item's `errors`."},
            413: {"model": ErrorBody, "description": "More than MAX_BATCH_EVENTS items, or body too large."},
            422: {"model": ErrorBody, "description": 'The body is not a batch envelope `{"events": [...]}`.'},
            503: {"model": ErrorBody, "description": "Shutting down; retry after `Retry-After`."},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": BatchRequest.model_json_schema()}},
            }
        },
    )
    async def ingest_batch(
        request: Request,
        runtime: RuntimeDep,
        traceparent: TraceparentDep,
        ack: AckQuery = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response:
        """Many events of any type. Valid items are published even when others are not; order is kept.
        With an `Idempotency-Key`, a retried batch gets the first answer for items already taken."""
        # The body is parsed here rather than by FastAPI: an all-valid batch is parsed and
        # validated from bytes in one pydantic-core call, several times faster than item by item.
        items = parse_batch(await request.body(), max_batch)
        refused = _refuse_while_stopping(runtime)
        if refused is not None:
            return refused
        outcomes = await runtime.ingest.ingest_batch(
            items, idempotency_key, traceparent, ack or runtime.settings.ack_level
        )
        body = _batch_body(outcomes)
        retry_after = [o.failure.retry_after for o in outcomes if o.failure and o.failure.retry_after]
        headers = {"Retry-After": str(max(1, round(max(retry_after))))} if retry_after else None
        status = 207 if body["rejected"] else 202
        return JsonResponse(body, status_code=status, headers=headers)

    return router


def _batch_body(outcomes: list[ItemOutcome]) -> dict[str, Any]:
    """The BatchResult body, built as plain data (this runs once per item of every batch)."""
    counts = dict.fromkeys(("accepted", "spooled", "unrouted", "duplicate", "rejected"), 0)
    results = []
    for index, outcome in enumerate(outcomes):
        counts[outcome.status] += 1
        item: dict[str, Any] = {"index": index, "status": outcome.status, "topics": outcome.topics}
        if outcome.event_id is not None:
            item["event_id"] = str(outcome.event_id)
        if outcome.validation_errors is not None:
            item["errors"] = [
                {
                    "code": "validation_error",
                    "message": error["message"],
                    "retriable": False,
                    "field": error["field"],
                }
                for error in outcome.validation_errors
            ]
        elif outcome.failure is not None:
            failure = outcome.failure
            item["errors"] = [
                {"code": failure.code.value, "message": failure.message, "retriable": failure.retriable}
            ]
        results.append(item)
    return {**counts, "results": results}
