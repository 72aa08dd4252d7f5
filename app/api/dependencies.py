"""FastAPI dependencies: the app's Runtime (the ingest routes read it through ingest_options), and
who asks for an admin change (for the audit trail)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.auth import caller
from app.audit.trail import Actor
from app.runtime import Runtime


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker
# thread, a thread hand-off per request that cost more than the whole rest of a request.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_actor(request: Request) -> Actor:
    """The API key that made the request (`anonymous` with AUTH_ENABLED=false) and its request id."""
    key = caller(request)
    request_id = request.scope.get("state", {}).get("request_id")
    return Actor(key.id, key.name, request_id)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ActorDep = Annotated[Actor, Depends(get_actor)]
