"""FastAPI dependencies: the app's Runtime, and the caller's W3C trace context."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.observability.request_context import current_traceparent
from app.runtime import Runtime


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker
# thread, a thread hand-off per request that cost more than the whole rest of a request.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_traceparent(
    traceparent: Annotated[
        str | None, Header(description="W3C trace context; copied into the Kafka record headers.")
    ] = None,
) -> str | None:
    # The parameter documents the header; RequestIdMiddleware has already checked it (the W3C
    # spec says to ignore a malformed traceparent rather than fail the request).
    return current_traceparent.get()


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
TraceparentDep = Annotated[str | None, Depends(get_traceparent)]
