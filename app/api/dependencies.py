"""FastAPI dependencies: the app's Runtime, and the caller's W3C trace context."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, Request

from app.runtime import Runtime

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


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
    # The W3C spec says to ignore a malformed traceparent rather than fail the request.
    if traceparent and _TRACEPARENT.fullmatch(traceparent.strip()):
        return traceparent.strip()
    return None


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
TraceparentDep = Annotated[str | None, Depends(get_traceparent)]
