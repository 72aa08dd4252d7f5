"""`/admin/dlq`: peek at dead-lettered records and replay them to their original topics."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated, Any

from confluent_kafka import KafkaException
from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from app.api.dependencies import ActorDep, RuntimeDep
from app.api.request_body import ADMIN_MAX_BYTES, BODY_RESPONSES, limited_body_route
from app.api.schemas import ErrorBody
from app.audit.trail import AuditEntry
from app.publishing.dead_letters import DeadLetters, ReplayFilter

router = APIRouter(
    prefix="/admin/dlq",
    tags=["admin: dead letters"],
    route_class=limited_body_route(ADMIN_MAX_BYTES),
    responses=BODY_RESPONSES,
)
_replaying = asyncio.Lock()


class ReplayRequest(ReplayFilter):
    """A filter, plus how to run the replay."""

    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(False, description="Count what would be replayed; publish and commit nothing.")
    max_records: int = Field(10_000, ge=1, le=1_000_000, description="Stop after scanning this many records.")
    group: str | None = Field(
        None, max_length=200, description="Consumer group; default: one per filter (DLQ_REPLAY_GROUP-<hash>)."
    )


class ReplayAnswer(BaseModel):
    """What a replay did; `complete` is false when it stopped before the end of the DLQ."""

    group: str
    dry_run: bool
    scanned: int
    matched: int
    replayed: int
    complete: bool
    error: str | None
    by_reason: dict[str, int]


def _dead_letters(runtime: Any) -> DeadLetters:
    settings = runtime.settings
    return DeadLetters(
        runtime.kafka_admin, settings.librdkafka_config(), settings.kafka_topic_dlq, settings.dlq_replay_group
    )


@router.get("", summary="The most recent dead-lettered records, newest first")
async def peek(runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """Each with its `dlq_reason`, `dlq_timestamp`, `original_topic`, `event_id`, key and value."""
    try:
        records = await asyncio.to_thread(_dead_letters(runtime).peek, limit)
    except KafkaException as exc:
        raise HTTPException(503, f"Kafka did not answer: {exc}", headers={"Retry-After": "5"}) from None
    return {"topic": runtime.settings.kafka_topic_dlq, "records": records}


@router.post(
    "/replay",
    response_model=ReplayAnswer,
    summary="Republish dead-lettered records to their original topics",
    responses={409: {"model": ErrorBody, "description": "A replay is already running in this worker."}},
)
async def replay(request: ReplayRequest, runtime: RuntimeDep, actor: ActorDep) -> dict[str, Any]:
    """Consumes the DLQ with its own consumer group and commits only after Kafka acknowledged the
    republished records: a replay cut short (even by a crash) goes on where it stopped, repeating at
    most the unacknowledged window (DLQ_REPLAY_WINDOW records). Filters: reason (substring),
    event_type, original_topic, since/until (dead-lettering time). A replay that is not a dry run is
    recorded in the audit trail with its request and what it did."""
    if _replaying.locked():
        raise HTTPException(409, "a replay is already running in this worker")
    settings = runtime.settings
    wanted = ReplayFilter.model_validate(request.model_dump(include=set(ReplayFilter.model_fields)))
    async with _replaying:
        report = await asyncio.to_thread(
            _dead_letters(runtime).replay,
            wanted,
            request.dry_run,
            request.max_records,
            settings.dlq_replay_window,
            settings.dlq_replay_timeout.total_seconds(),
            request.group,
        )
    answer = asdict(report)
    if not request.dry_run:
        entry = AuditEntry(
            actor,
            "dlq.replay",
            settings.kafka_topic_dlq,
            None,
            {"request": request.model_dump(mode="json"), "report": answer},
        )
        await asyncio.to_thread(runtime.audit.record, entry)
    return answer
