"""`/admin/topics` and `/admin/consumer-groups/{group}/lag`: what the cluster holds, read-only."""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaException
from fastapi import APIRouter, HTTPException

from app.api.dependencies import RuntimeDep
from app.api.schemas import ErrorBody

router = APIRouter(prefix="/admin", tags=["admin: kafka"])

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "Kafka did not answer."}
}


def _unavailable(exc: Exception) -> HTTPException:
    return HTTPException(503, f"Kafka did not answer: {exc}", headers={"Retry-After": "5"})


@router.get("/topics", summary="The topics the service writes to: partitions, offsets, config, mismatches",
            responses=UNAVAILABLE)  # fmt: skip
async def list_topics(runtime: RuntimeDep) -> dict[str, Any]:
    """Each topic the service needs (configured, DLQ, named by rules), as the cluster describes it now.
    `mismatches` lists differences from KAFKA_TOPIC_PARTITIONS / _REPLICATION_FACTOR; nothing is
    changed automatically."""
    try:
        reports = await asyncio.to_thread(runtime.describe_topics, list(runtime.needed_topics()))
    except KafkaException as exc:
        raise _unavailable(exc) from None
    return {"topics": [report.as_dict() for report in reports]}


@router.get("/topics/{name}", summary="One topic", responses={404: {"model": ErrorBody}, **UNAVAILABLE})
async def get_topic(name: str, runtime: RuntimeDep) -> dict[str, Any]:
    try:
        report = await asyncio.to_thread(runtime.describe_topic, name)
    except KafkaException as exc:
        raise _unavailable(exc) from None
    if not report.exists:
        raise HTTPException(404, f"no topic {name!r}")
    return report.as_dict()


@router.get("/consumer-groups/{group}/lag", summary="How far a consumer group is behind, per partition",
            responses=UNAVAILABLE)  # fmt: skip
async def group_lag(group: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Lag = latest offset - committed offset, for every partition the group has committed on."""
    try:
        committed = await asyncio.to_thread(runtime.kafka_admin.committed, group)
        topics = sorted({topic for topic, _ in committed})
        latest: dict[tuple[str, int], int] = {}
        for topic in topics:
            partitions = [p for t, p in committed if t == topic]
            offsets = await asyncio.to_thread(runtime.kafka_admin.offsets, topic, partitions)
            latest |= {(topic, p): hi for p, (_, hi) in offsets.items()}
    except KafkaException as exc:
        raise _unavailable(exc) from None
    partitions_out = [
        {
            "topic": t,
            "partition": p,
            "committed": offset,
            "latest": latest[(t, p)],
            "lag": max(0, latest[(t, p)] - offset),
        }
        for (t, p), offset in sorted(committed.items())
    ]
    return {"group": group, "lag": sum(item["lag"] for item in partitions_out), "partitions": partitions_out}
