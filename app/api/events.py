"""`POST /v1/events/...`: one event per request, or a batch with one result per item."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from app.api.dependencies import RuntimeDep, TraceparentDep
from app.api.errors import describe_errors, error_response
from app.api.request_body import limited_body_route
from app.api.responses import JsonResponse
from app.api.schemas import BatchItemResult, BatchRequest, BatchResult, ErrorBody, EventAccepted, ItemError
from app.config.settings import Settings
from app.events.models import ActivityEvent, AnyEvent, AttemptEvent, BaseEvent, PlacementEvent, SessionEvent
from app.publishing.publisher import FailureCode, Outcome, PublishResult
from app.runtime import Runtime

EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

_FAILURE_STATUS = {
    FailureCode.QUEUE_FULL: 429,
    FailureCode.BROKER_UNAVAILABLE: 503,
    FailureCode.RECORD_REJECTED: 422,
}

SINGLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted: Kafka acknowledged the event in every topic listed (or `unrouted`)."},
    413: {"model": ErrorBody, "description": "Body larger than MAX_REQUEST_BYTES."},
    422: {"model": ErrorBody, "description": "Invalid event: `detail` names each bad field."},
    429: {"model": ErrorBody, "description": "Publisher queue full; retry after `Retry-After` seconds."},
    503: {
        "model": ErrorBody,
        "description": "Kafka unavailable or shutting down; retry after `Retry-After`.",
    },
}


def _answer_single(result: PublishResult) -> Response:
    if result.failure is None:
        body = EventAccepted(
            event_id=result.event_id, status=result.outcome.value, topics=list(result.topics)
        )
        return JsonResponse(body.model_dump(mode="json"), status_code=202)
    failure = result.failure
    return error_response(
        _FAILURE_STATUS[failure.code],
        failure.message,
        failure.code.value,
        retriable=failure.retriable,
        retry_after=failure.retry_after,
        event_id=result.event_id,
    )


async def _publish_single(event: BaseEvent, runtime: Runtime, traceparent: str | None) -> Response:
    if runtime.shutting_down:
        return error_response(503, "service is shutting down", "shutting_down", retriable=True, retry_after=1)
    return _answer_single(await runtime.publisher.publish(event, traceparent))


def events_router(settings: Settings) -> APIRouter:
    """The ingest routes, with request bodies limited to MAX_REQUEST_BYTES."""
    router = APIRouter(
        prefix="/v1/events", tags=["events"], route_class=limited_body_route(settings.max_request_bytes)
    )
    max_batch = settings.max_batch_events

    @router.post("/attempts", status_code=202, response_model=EventAccepted, responses=SINGLE_RESPONSES)
    async def ingest_attempt(
        event: AttemptEvent, runtime: RuntimeDep, traceparent: TraceparentDep
    ) -> Response:
        """A learner answered an item. Routed to the attempts topic, and to ML training when quality ≥ 4."""
        return await _publish_single(event, runtime, traceparent)

    @router.post("/sessions", status_code=202, response_model=EventAccepted, responses=SINGLE_RESPONSES)
    async def ingest_session(
        event: SessionEvent, runtime: RuntimeDep, traceparent: TraceparentDep
    ) -> Response:
        """A study session changed state. Routed to the sessions topic when items_attempted > 0."""
        return await _publish_single(event, runtime, traceparent)

    @router.post("/placements", status_code=202, response_model=EventAccepted, responses=SINGLE_RESPONSES)
    async def ingest_placement(
        event: PlacementEvent, runtime: RuntimeDep, traceparent: TraceparentDep
    ) -> Response:
        """A placement test changed state. Completed tests go to placements and ML training."""
        return await _publish_single(event, runtime, traceparent)

    @router.post("/activities", status_code=202, response_model=EventAccepted, responses=SINGLE_RESPONSES)
    async def ingest_activity(
        event: ActivityEvent, runtime: RuntimeDep, traceparent: TraceparentDep
    ) -> Response:
        """Any other learner activity. Routed to the activities topic."""
        return await _publish_single(event, runtime, traceparent)

    @router.post(
        "/batch",
        status_code=202,
        response_model=BatchResult,
        responses={
            202: {"description": "Every item accepted (or unrouted)."},
            207: {"model": BatchResult, "description": "Some items rejected: see each item's `errors`."},
            413: {
                "model": ErrorBody,
                "description": f"More than MAX_BATCH_EVENTS ({max_batch}) items, or body too large.",
            },
            422: {"model": ErrorBody, "description": 'The body is not a batch envelope `{"events": [...]}`.'},
            503: {"model": ErrorBody, "description": "Shutting down; retry after `Retry-After`."},
        },
    )
    async def ingest_batch(batch: BatchRequest, runtime: RuntimeDep, traceparent: TraceparentDep) -> Response:
        """Many events of any type. Valid items are published even when others are not; order is kept."""
        if len(batch.events) > max_batch:
            raise HTTPException(413, f"batch has {len(batch.events)} events; the limit is {max_batch}")
        if runtime.shutting_down:
            return error_response(
                503, "service is shutting down", "shutting_down", retriable=True, retry_after=1
            )
        result = await _publish_batch(batch.events, runtime, traceparent)
        headers = None
        if any(item.errors and any(error.retriable for error in item.errors) for item in result.results):
            headers = {"Retry-After": "1"}
        status = 207 if result.rejected else 202
        return JsonResponse(
            result.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers
        )

    return router


async def _publish_batch(items: list[Any], runtime: Runtime, traceparent: str | None) -> BatchResult:
    results: list[BatchItemResult | None] = [None] * len(items)
    valid: list[tuple[int, BaseEvent]] = []
    for index, item in enumerate(items):
        try:
            valid.append((index, EVENT_ADAPTER.validate_python(item)))
        except ValidationError as exc:
            errors = [
                ItemError(
                    code="validation_error", retriable=False, field=error["field"], message=error["message"]
                )
                for error in describe_errors(exc.errors(), strip_tag=True)
            ]
            raw_id = item.get("event_id") if isinstance(item, dict) else None
            results[index] = BatchItemResult(
                index=index, status="rejected", event_id=_uuid_or_none(raw_id), errors=errors
            )
    runtime.metrics.record_rejected("validation", len(items) - len(valid))
    published = await runtime.publisher.publish_many([event for _, event in valid], traceparent)
    for (index, _), outcome in zip(valid, published, strict=True):
        results[index] = _item_result(index, outcome)
    final = [result for result in results if result is not None]
    return BatchResult(
        accepted=sum(1 for item in final if item.status == "accepted"),
        unrouted=sum(1 for item in final if item.status == "unrouted"),
        rejected=sum(1 for item in final if item.status == "rejected"),
        results=final,
    )


def _item_result(index: int, outcome: PublishResult) -> BatchItemResult:
    if outcome.failure is None:
        status = "accepted" if outcome.outcome is Outcome.ACCEPTED else "unrouted"
        return BatchItemResult(
            index=index, status=status, event_id=outcome.event_id, topics=list(outcome.topics)
        )
    failure = outcome.failure
    error = ItemError(code=failure.code.value, message=failure.message, retriable=failure.retriable)
    return BatchItemResult(index=index, status="rejected", event_id=outcome.event_id, errors=[error])


def _uuid_or_none(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None
