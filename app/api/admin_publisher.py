"""`/admin/publisher/pause` and `/resume`: hold deliveries (events are spooled) and let them go."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.dependencies import ActorDep, RuntimeDep
from app.runtime import Runtime

router = APIRouter(prefix="/admin/publisher", tags=["admin: publisher"])


def _state(runtime: Runtime) -> dict[str, Any]:
    stats = runtime.spool.stats
    return {"paused": runtime.relay.pause.paused, "spool_depth": stats.depth}


@router.post("/pause", summary="Pause publishing: accepted events go to the spool (202 spooled)")
async def pause(runtime: RuntimeDep, actor: ActorDep) -> dict[str, Any]:
    """Every worker and instance obeys within SPOOL_RELAY_INTERVAL. Nothing is refused or lost."""
    await runtime.set_paused(True, actor)
    return _state(runtime)


@router.post("/resume", summary="Resume publishing: the relay drains the spool in order")
async def resume(runtime: RuntimeDep, actor: ActorDep) -> dict[str, Any]:
    await runtime.set_paused(False, actor)
    return _state(runtime)
